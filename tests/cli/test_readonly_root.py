"""A root on a read-only mount: every writing command says so in one line and exits 5 (storage), no traceback.

The root is bind-mounted read-only inside a private user+mount namespace (`unshare -rm`, no privileges
needed), so writes fail with a real EROFS, which permission bits cannot predict (the tests run as root).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from oiv4_mirror import UniverseSpec
from support.fetch_env import planned_root
from support.paths import SRC

TINY = UniverseSpec(seed=5, n_images=40, megapixels=(0.01, 0.02), misbehaviour_fraction=0.0)

#: Each command runs on the read-only root; its exit code and stderr are written outside it.
COMMANDS = {
    "plan_force": "plan --force",
    "metadata_force": "metadata --force --base-url {base}",
    "report": "report",
    "plan": "plan",
    "fetch": "fetch train --no-progress",
    "verify_requeue": "verify --requeue",
}

SCRIPT = textwrap.dedent(
    """
    set -u
    R=$1; OUT=$2; PY=$3
    mount --bind "$R" "$R" && mount -o remount,bind,ro "$R" || exit 90
    touch "$R/probe" 2>/dev/null && exit 91   # the mount must really be read-only
    for name in $(echo "$COMMANDS" | $PY -c 'import json,sys; print(" ".join(json.load(sys.stdin)))'); do
        args=$(echo "$COMMANDS" | $PY -c "import json,sys; print(json.load(sys.stdin)['$name'])")
        $PY -m oiv4 $args --root "$R" > "$OUT/$name.out" 2> "$OUT/$name.err"; echo $? > "$OUT/$name.rc"
    done
    """
)


@pytest.fixture(scope="module")
def readonly_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Run every command of COMMANDS on a planned root mounted read-only; {name: (exit code, stderr)}."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux `unshare` is needed for a read-only bind mount"
    out = tmp_path_factory.mktemp("out")
    with planned_root(tmp_path_factory.mktemp("root"), TINY, train_size=10, shard_rows=8) as (mirror, root):
        commands = {k: v.format(base=mirror.metadata_base_url) for k, v in COMMANDS.items()}
        proc = subprocess.run(
            [unshare, "--user", "--map-root-user", "--mount", "bash", "-c", SCRIPT, "sh", root, out, sys.executable],
            env={"COMMANDS": json.dumps(commands), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr
    return {n: (int((out / f"{n}.rc").read_text()), (out / f"{n}.err").read_text()) for n in COMMANDS}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_writing_command_on_a_read_only_root_is_one_line_and_exit_5(readonly_results, name: str) -> None:
    code, err = readonly_results[name]
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert code == 5, err
    assert "read-only" in err and "oiv4 " in err, err
