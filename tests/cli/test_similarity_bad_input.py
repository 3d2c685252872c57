"""Bad input to `oiv4 features` and `oiv4 neighbors`, the way a user meets it: the installed command in a
subprocess, one line `oiv4 <command>: ...` with the documented exit code, no traceback, and every file that
was already under the root (vectors, ledgers, a finished ground truth) byte-identical afterwards."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oiv4.contracts.layout import LAYOUT
from support.feature_shards import write_features
from support.tiny_weights import save_tiny_weights

OIV4 = str(Path(sys.executable).with_name("oiv4"))
MODEL = "tiny-cnn"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(args: list[str], root: Path, code: int, message: str) -> str:
    """Run `oiv4 *args`; assert one line with `message`, exit `code`, and nothing under `root` changed."""
    before = _files(root)
    done = subprocess.run([OIV4, *args], capture_output=True, text=True, timeout=300)
    line = done.stderr.strip()
    assert done.returncode == code, done.stderr
    assert line.startswith(f"oiv4 {args[0]}: ") and len(line.splitlines()) == 1, done.stderr
    assert message in line and "Traceback" not in done.stderr + done.stdout
    assert _files(root) == before  # nothing written, nothing lost
    return line


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.pth", seed=5)


@pytest.fixture(scope="module")
def with_features(tmp_path_factory: pytest.TempPathFactory, tiny_demo_root: Path, weights: Path) -> Path:
    """The tiny demo build with the validation vectors written by the command."""
    root = shutil.copytree(
        tiny_demo_root, tmp_path_factory.mktemp("f") / "root", ignore=shutil.ignore_patterns("report")
    )
    done = subprocess.run(_features(root, weights, "validation"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def root(with_features: Path, tmp_path: Path) -> Path:
    return shutil.copytree(with_features, tmp_path / "root")


def _features(root: Path, weights: Path, image_set: str) -> list[str]:
    return [OIV4, "features", image_set, "--root", str(root), "--model", MODEL, "--weights", str(weights)]


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_finished_features_shard_is_named_and_the_named_removal_writes_it_again(
    root: Path, weights: Path, damage: str
) -> None:
    npy = root / LAYOUT.features_npy(MODEL, "validation", 0)
    written = npy.read_bytes()
    if damage == "truncated":
        npy.write_bytes(written[: len(written) // 2])
    else:
        npy.unlink()
    state = "is missing" if damage == "deleted" else f"holds {len(written) // 2:,} bytes, not the {len(written):,}"
    line = _refused(_features(root, weights, "validation")[1:], root, 6, f"{npy} {state}")
    pattern = re.search(r"remove (\S+)", line).group(1)  # the files the message says to remove
    for p in Path("/").glob(pattern.lstrip("/")):
        p.unlink()
    again = subprocess.run(_features(root, weights, "validation"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert npy.read_bytes() == written


def test_features_of_another_dimension_than_earlier_shards_is_one_line_and_loses_nothing(root: Path, weights: Path):
    npy = root / LAYOUT.features_npy(MODEL, "targets", 3)
    npy.parent.mkdir(parents=True)
    np.save(npy, np.zeros((2, 32), np.float16))
    _refused(_features(root, weights, "targets")[1:], root, 2, "img_emb_00003.npy holds 32-d vectors but tiny-cnn")


def test_features_of_a_planned_set_with_nothing_stored_yet_says_to_build_it(root: Path, weights: Path) -> None:
    shutil.rmtree(root / "ledger" / "train")
    shutil.rmtree(root / "train")
    _refused(_features(root, weights, "train")[1:], root, 2, "train has no ledger under")


@pytest.fixture
def vectors(tmp_path: Path) -> Path:
    """Vectors for targets and validation (4-d), train (5-d), and a finished validation-targets ground truth."""
    rng = np.random.default_rng(0)
    write_features(tmp_path, MODEL, "targets", rng.standard_normal((10, 4)).astype(np.float16))
    write_features(tmp_path, MODEL, "validation", rng.standard_normal((6, 4)).astype(np.float16))
    write_features(tmp_path, MODEL, "train", rng.standard_normal((6, 5)).astype(np.float16))
    args = ["neighbors", "--root", str(tmp_path), "--queries", "validation", "--database", "targets", "--model", MODEL]
    done = subprocess.run([OIV4, *args, "--k", "3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "neighbors" / MODEL / "validation-targets.parquet").exists()
    return tmp_path


NEIGHBORS_CASES = {
    "unknown metric": (["--metric", "hamming"], 2, "'hamming' is not one of 'l2', 'ip', 'cosine'"),
    "sample larger than the set": (["--queries", "validation:7"], 3, "asks for more queries than validation has (6)"),
    "k larger than the database": (["--k", "11"], 3, "--k 11 is larger than the database (10 vectors)"),
    "a sample of none": (["--queries", "validation:0"], 2, "N in SET:N must be a whole number of at least 1"),
    "a negative sample": (["--queries", "validation:-3"], 2, "N in SET:N must be a whole number of at least 1"),
    "a sample that is not a number": (["--queries", "validation:x"], 2, "--queries validation:x: N in SET:N"),
    "an unknown set": (["--database", "tragets"], 2, "'tragets'"),
    "a set without features": (["--database", "extended_targets"], 3, "run `oiv4 features extended_targets"),
    "a model without features": (["--model", "resnet50"], 3, "run `oiv4 features validation --model resnet50`"),
    "another dimension": (["--database", "train"], 3, "5-d"),
    "no dedup yet": (["--exclude-duplicates"], 3, "oiv4 dedup"),
}


@pytest.mark.parametrize("case", NEIGHBORS_CASES)
def test_neighbors_bad_input_is_one_line_and_keeps_the_ground_truth_already_written(vectors: Path, case: str):
    extra, code, message = NEIGHBORS_CASES[case]
    args = ["neighbors", "--root", str(vectors), "--queries", "validation", "--database", "targets"]
    _refused([*args, "--model", MODEL, "--k", "3", *extra], vectors, code, message)


def test_neighbors_over_vectors_whose_npy_is_gone_names_the_file(vectors: Path) -> None:
    npy = vectors / LAYOUT.features_npy(MODEL, "targets", 0)
    npy.unlink()
    args = ["neighbors", "--root", str(vectors), "--queries", "validation", "--database", "targets"]
    _refused([*args, "--model", MODEL, "--k", "3"], vectors, 6, f"{npy} is missing but its metadata exists")


def test_neighbors_over_a_truncated_npy_names_the_file_and_the_command_that_rewrites_it(vectors: Path) -> None:
    npy = vectors / LAYOUT.features_npy(MODEL, "targets", 0)
    npy.write_bytes(npy.read_bytes()[:-7])
    args = ["neighbors", "--root", str(vectors), "--queries", "validation", "--database", "targets"]
    _refused([*args, "--model", MODEL, "--k", "3"], vectors, 6, f"{npy} is damaged")
