"""`oiv4 estimate` for features and ground truth, checked against what real `oiv4 features` and `oiv4 neighbors`
runs write on the tiny demo build: Parquet bytes, parts (passes over the database), vector counts and bytes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.contracts.errors import UsageError
from oiv4.contracts.layout import LAYOUT
from oiv4.io.storage import Storage
from oiv4.io.vector_shards import open_features
from oiv4.run.executor import ExecutorSettings
from oiv4.run.features import features_set
from oiv4.stages.estimate import (
    GROUND_TRUTH_BYTES_PER_ROW,
    KNN_MULTIPLY_ADDS_PER_CPU_S,
    EstimateSettings,
    estimate,
    neighbors_estimate,
)
from oiv4.stages.features import FeaturesSettings
from oiv4.stages.features.models import MODELS
from oiv4.stages.neighbors.search import DB_ROW_BYTES, MIN_WORK_BYTES, RUNTIME_BYTES, plan_sizes
from support.feature_shards import write_features
from support.tiny_weights import save_tiny_weights

MODEL = "tiny-cnn"
DIMS = {m.name: m.dim for m in MODELS.values()}
#: A ground-truth Parquet here weighs between this fraction of the estimate and the estimate: the per-row
#: figure is measured at full scale, where the ids no longer fit Parquet's dictionary; these databases' 84 and
#: 2,000 ids do, so their files are smaller (0.47-0.9x), never larger: the disk is not undersized.
PARQUET_FLOOR = 0.4


@pytest.fixture(scope="module")
def with_features(tmp_path_factory: pytest.TempPathFactory, tiny_demo_root: Path) -> Path:
    """The demo build with real tiny-cnn vectors (float16) for validation and targets."""
    root = shutil.copytree(
        tiny_demo_root, tmp_path_factory.mktemp("est") / "root", ignore=shutil.ignore_patterns("report")
    )
    weights = save_tiny_weights(root.parent / "tiny.pth", seed=3)
    settings = FeaturesSettings(model=MODEL, weights=str(weights), loader_workers=0, batch_size=8)
    for image_set in ("validation", "targets"):
        features_set(Storage(str(root)), image_set, settings, ExecutorSettings(kind="thread", workers=1))
    return root


def _json(root: Path, *args: str) -> dict:
    r = CliRunner().invoke(app, ["estimate", "--root", str(root), "--json", "--model", MODEL, *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _neighbors(root: Path, *args: str) -> pq.ParquetFile:
    r = CliRunner().invoke(app, ["neighbors", "--root", str(root), "--model", MODEL, *args])
    assert r.exit_code == 0, r.output
    return pq.ParquetFile(root / r.output.split("wrote ")[1].split()[0])


@pytest.mark.parametrize(("memory_gb", "k"), [("2", "5"), ("4", "20")])
def test_the_ground_truth_estimate_is_what_oiv4_neighbors_then_writes_and_reads(
    with_features: Path, memory_gb: str, k: str
) -> None:
    job = ["--neighbors-queries", "validation", "--neighbors-database", "targets", "--k", k, "--memory-gb", memory_gb]
    n = _json(with_features, *job)["neighbors"]
    storage = Storage(str(with_features))
    q, db = open_features(storage, MODEL, "validation"), open_features(storage, MODEL, "targets")
    assert (n["query_count"], n["database_rows"], n["dim"]) == (len(q), len(db), 16)
    assert all("vectors written" in b for b in n["counts_basis"])
    # One pass reads every database vector as stored (float16), and every part reads it twice.
    assert n["database_bytes"] == sum(s.nbytes for s in db.shards) == len(db) * 16 * 2
    assert n["read_bytes"] == n["passes"] * n["database_bytes"] and n["passes"] == 2 * n["parts"]
    assert n["cpu_core_seconds"] == pytest.approx(len(q) * len(db) * 16 / KNN_MULTIPLY_ADDS_PER_CPU_S)

    written = _neighbors(
        with_features, "--queries", "validation", "--database", "targets", "--k", k, "--memory-gb", memory_gb
    )
    out = with_features / LAYOUT.neighbors_file(MODEL, "validation-targets")
    # The final file holds one row group per part of queries: as many as the estimate counted.
    assert written.metadata.num_rows == len(q) * int(k) and written.num_row_groups == n["parts"]
    assert PARQUET_FLOOR * n["disk_bytes"] <= out.stat().st_size <= n["disk_bytes"], (out.stat().st_size, n)
    assert n["parts"] == 1  # the demo's 19 queries fit one part at any budget the search accepts
    out.unlink()


def test_a_tight_budget_cuts_the_queries_into_the_parts_a_real_run_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    write_features(tmp_path, MODEL, "targets", rng.standard_normal((2000, 4096)).astype(np.float16), 500)
    write_features(tmp_path, MODEL, "validation", rng.standard_normal((1200, 4096)).astype(np.float16), 500)
    storage = Storage(str(tmp_path))
    # Just above the least the search accepts for 2,000 database rows: parts of a few hundred queries.
    memory_gb = (RUNTIME_BYTES + 2000 * DB_ROW_BYTES + MIN_WORK_BYTES) / 2**30 + 0.002
    n = neighbors_estimate(
        storage,
        "validation",
        "targets",
        model=MODEL,
        dim=4096,
        dtype="float16",
        k=10,
        memory_gb=memory_gb,
        features=[],
        sizing=plan_sizes,
    )
    assert n.parts == math.ceil(1200 / plan_sizes(memory_gb, 4096, 2, 10, 0, 2000).query_rows) > 1
    assert (n.passes, n.database_bytes) == (2 * n.parts, 2000 * 4096 * 2)
    written = _neighbors(
        tmp_path, "--queries", "validation", "--database", "targets", "--k", "10", "--memory-gb", f"{memory_gb!r}"
    )
    assert written.num_row_groups == n.parts and written.metadata.num_rows == 12000
    size = (tmp_path / LAYOUT.neighbors_file(MODEL, "validation-targets")).stat().st_size
    assert PARQUET_FLOOR * n.disk_bytes <= size <= n.disk_bytes, (size, n.disk_bytes)


def test_a_query_set_without_vectors_is_costed_from_its_stored_images_and_its_dtype(with_features: Path) -> None:
    n = _json(
        with_features,
        *("--neighbors-queries", "train:10", "--neighbors-database", "targets,validation,train", "--dtype", "float32"),
    )["neighbors"]
    storage = Storage(str(with_features))
    est = {f.image_set: f for f in estimate(storage, EstimateSettings(model=MODEL), dims=DIMS).features}
    t, v = open_features(storage, MODEL, "targets"), open_features(storage, MODEL, "validation")
    assert n["query_count"] == 10 and n["database"] == ["targets", "validation", "train"]
    assert n["database_rows"] == len(t) + len(v) + est["train"].images and est["train"].images > 10
    assert n["counts_basis"][0] == f"train: {est['train'].images:,} images, vectors to write"
    # targets and validation as written (float16), train as it will be (float32).
    assert n["database_bytes"] == (len(t) + len(v)) * 16 * 2 + est["train"].images * 16 * 4
    assert n["parts"] == 1 and n["disk_bytes"] == 10 * 100 * GROUND_TRUTH_BYTES_PER_ROW + 1200 + 2048


def test_features_are_costed_for_the_named_model_and_dtype(with_features: Path) -> None:
    storage = Storage(str(with_features))

    def features(model: str, dtype: str) -> dict:
        est = estimate(storage, EstimateSettings(model=model, dtype=dtype), dims=DIMS)
        return {f.image_set: f for f in est.features}

    tiny = features(MODEL, "float16")
    assert tiny["validation"].remaining == tiny["targets"].remaining == 0 < tiny["train"].remaining
    r16, r32 = features("resnet50", "float16")["train"], features("resnet50", "float32")["train"]
    assert r16.remaining == r32.remaining == tiny["train"].images
    assert (r16.disk_bytes, r32.disk_bytes) == (r16.remaining * (2048 * 2 + 24), r16.remaining * (2048 * 4 + 24))
    assert r16.cpu_core_seconds == pytest.approx(r16.remaining / 3.2) and r16.dim == 2048
    clip = features("clip-vit-b-32", "float16")["train"]
    assert clip.dim == 512 and clip.cpu_core_seconds is None and "CPU time unknown" in clip.rate_basis
    assert clip.gpu_seconds == pytest.approx(clip.remaining / 1500)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--neighbors-queries", "valdation"], "unknown set 'valdation'"),
        (["--neighbors-database", "targets,targets"], "names a set twice"),
        (["--neighbors-queries", "validation:100000"], "asks for more queries than validation has"),
        (["--neighbors-queries", "validation:x"], "must be a positive number"),
        (["--neighbors-database", "targets", "--k", "100000"], "--k 100000 is larger than the database"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--dtype", "float8"], "float8"),
        (["--k", "0"], "--k"),
    ],
)
def test_bad_input_is_one_clear_line_with_exit_code_2(with_features: Path, args: list[str], message: str) -> None:
    r = CliRunner().invoke(app, ["estimate", "--root", str(with_features), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_a_set_with_neither_a_plan_nor_vectors_is_an_error_but_vectors_alone_are_enough(
    with_features: Path, tmp_path: Path
) -> None:
    root = shutil.copytree(with_features, tmp_path / "root", ignore=shutil.ignore_patterns("neighbors"))
    storage = Storage(str(root))
    (root / LAYOUT.plan("train")).unlink()
    settings = EstimateSettings(model=MODEL, neighbors_queries="train", neighbors_database="targets", k=3)
    with pytest.raises(UsageError, match="train has neither a plan nor tiny-cnn features"):
        estimate(storage, settings, dims=DIMS, sizing=plan_sizes)
    (root / LAYOUT.plan("validation")).unlink()  # its vectors are written: they are what the search reads
    settings = EstimateSettings(model=MODEL, neighbors_queries="validation", neighbors_database="targets", k=3)
    n = estimate(storage, settings, dims=DIMS, sizing=plan_sizes).neighbors
    assert n is not None and n.query_count == len(open_features(storage, MODEL, "validation"))


def test_the_default_job_is_validation_against_targets_and_a_demo_too_small_for_it_says_so(with_features: Path) -> None:
    doc = _json(with_features, "--k", "5")
    assert (doc["neighbors"]["queries"], doc["neighbors"]["database"]) == ("validation", ["targets"])
    r = CliRunner().invoke(app, ["estimate", "--root", str(with_features)], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "ground truth not costed: validation against targets: --k 100 is larger than the database" in " ".join(
        r.output.split()
    )


def test_the_printed_estimate_fits_80_columns(with_features: Path) -> None:
    args = ["estimate", "--root", str(with_features), "--model", MODEL, "--k", "5", "--link-mbps", "100"]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert (
        "features (tiny-cnn, 16-d float16):" in text
        and "ground truth (tiny-cnn, k 5): validation against targets" in text
    )
    assert "passes" in text and "on paper" in text
    assert max(cell_len(line) for line in r.output.splitlines()) <= 80
