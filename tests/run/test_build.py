"""The whole pipeline, as `oiv4 build` / `oiv4 demo` run it, against a mirror on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

import oiv4
from oiv4.cli.demo import DemoSettings, demo_build_settings, write_report
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.run.build import BuildSettings, run_build
from oiv4_mirror import UniverseSpec, start_mirror

SPEC = UniverseSpec(seed=21, n_images=320, megapixels=(0.05, 0.2), trickle_seconds=4.0, retry_after=0)


def _settings(base_url: str) -> BuildSettings:
    settings = demo_build_settings(DemoSettings(train_size=60, workers=2), base_url)
    # Slow trickles (4 s) must still end as timeouts, quickly.
    transfer = replace(settings.fetch.transfer, deadline_s=1.5, attempts=3, backoff_s=0.05)
    return replace(settings, fetch=replace(settings.fetch, transfer=transfer))


def test_build_produces_all_four_sets_and_a_rerun_redoes_nothing(tmp_path: Path) -> None:
    with start_mirror(SPEC, cache_dir=tmp_path / "cache") as mirror:
        storage = Storage(str(tmp_path / "root"))
        result = run_build(storage, _settings(mirror.base_url), report=write_report)
        universe = mirror.universe
        images = sorted((tmp_path / "root" / "train" / "images").rglob("*.jpg"))
        mtimes = [p.stat().st_mtime_ns for p in images]
        again = run_build(storage, _settings(mirror.base_url), report=write_report)
    assert all(s.done == 0 for s in again.fetch.values())
    assert all(a.status == "done_before" for s in again.archives.values() for a in s.archives)
    assert [p.stat().st_mtime_ns for p in images] == mtimes
    assert result.ok, result.verify
    assert result.plan is not None
    expected_counts = {
        "targets": len(universe.boxable_ids()),
        "validation": len(universe.validation_ids()),
        "train": 60,
        "extended_targets": len(universe.url_set_ids()) - 60,
    }
    assert result.plan.counts == expected_counts
    for image_set in ImageSet:
        ledger = read_set(storage, image_set)
        manifest = pq.read_table(tmp_path / "root" / "plan" / f"{image_set.value}.parquet")
        assert sorted(ledger.column("row").to_pylist()) == list(range(manifest.num_rows)), image_set
        for image_id, outcome in zip(
            ledger.column("image_id").to_pylist(), ledger.column("outcome").to_pylist(), strict=True
        ):
            want = universe.expected(image_id) if not image_set.from_archives else universe.expected_archive(image_id)
            assert outcome == want, (image_set, image_id)
    assert Path(result.report_path).is_file()
    # the promised three lines of Python
    ds = oiv4.open(str(tmp_path / "root"))
    some_id = ds.sets["train"].ids()[0]
    assert ds.sets["train"][some_id].size[0] <= 1024


def test_demo_cli_runs_the_pipeline_and_exits_zero(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "oiv4", "demo", "--root", str(tmp_path / "demo"), "--images", "200", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "verify: clean" in proc.stderr
    assert (tmp_path / "demo" / "report" / "index.html").is_file()
    assert "Traceback" not in proc.stderr
