"""`oiv4 estimate`: transfer, disk and time of the work still to do, from the plan, the ledger and measured defaults."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.contracts.errors import UsageError
from oiv4.contracts.layout import LAYOUT
from oiv4.io.ledger import read_set
from oiv4.io.manifest import read_manifest
from oiv4.io.storage import Storage
from oiv4.stages.estimate import (
    DEFAULT_STORED_RATIO,
    EstimateSettings,
    estimate,
    published_archive_bytes,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_demo_root: Path) -> Iterator[Path]:
    yield shutil.copytree(tiny_demo_root, tmp_path_factory.mktemp("estimate") / "root")


def _copy(built: Path, dest: Path) -> Storage:
    shutil.copytree(built, dest)
    return Storage(str(dest))


def test_a_finished_build_has_nothing_left_to_transfer_store_or_wait_for(built: Path) -> None:
    est = estimate(Storage(str(built)), EstimateSettings(link_mbps=100, workers=2))
    assert [s.image_set for s in est.sets] == ["targets", "validation", "train", "extended_targets"]
    assert all(s.remaining_rows == 0 and not s.remaining_archives for s in est.sets)
    assert (est.transfer_bytes, est.disk_bytes, est.wall_seconds) == (0, 0, 0.0)


def test_url_rows_without_a_ledger_row_cost_their_original_size_at_the_measured_ratio_and_rate(
    built: Path, tmp_path: Path
) -> None:
    storage = _copy(built, tmp_path / "r")
    shutil.rmtree(storage.local_path(LAYOUT.ledger_dir("extended_targets")))
    sizes = read_manifest(storage, "extended_targets", ["OriginalSize"])["OriginalSize"]
    train = read_set(storage, "train")
    ok = train.filter(pc.and_(pc.equal(train["outcome"], "ok"), pc.equal(train["source"], "original")))
    ratio = pc.sum(ok["stored_bytes"]).as_py() / pc.sum(ok["bytes_downloaded"]).as_py()

    est = estimate(storage, EstimateSettings(workers=2))
    ext = next(s for s in est.sets if s.image_set == "extended_targets")
    assert ext.remaining_rows == ext.planned == len(sizes) > 0
    assert ext.transfer_bytes == pc.sum(sizes).as_py()
    # Sizes and speed come from train's finished rows (extended_targets has none), not the defaults.
    assert ext.disk_bytes == int(ext.transfer_bytes * ratio) and ratio != DEFAULT_STORED_RATIO
    assert "measured" in ext.disk_basis and "measured" in ext.rate_basis
    assert ext.core_seconds > 0
    assert est.cpu_seconds == pytest.approx(ext.core_seconds / 2)
    assert est.network_seconds is None and est.wall_seconds == est.cpu_seconds


def test_unconverted_archives_cost_their_published_size_and_the_link_can_be_the_limit(
    built: Path, tmp_path: Path
) -> None:
    storage = _copy(built, tmp_path / "r")
    (storage.local_path(LAYOUT.archive_zip("validation", "validation"))).unlink()
    est = estimate(storage, EstimateSettings(link_mbps=100, workers=2, keep_tar=True))
    val = next(s for s in est.sets if s.image_set == "validation")
    published = published_archive_bytes()["validation"]
    assert val.remaining_archives == ["validation.tar.gz"]
    assert val.remaining_rows == val.planned
    assert (val.transfer_bytes, val.disk_bytes) == (published, 2 * published)  # zip + the kept .tar.gz
    assert est.network_seconds == pytest.approx(published * 8 / 100e6)
    assert est.wall_seconds == max(est.network_seconds, est.cpu_seconds)


def test_without_measured_rows_the_documented_defaults_are_used(built: Path, tmp_path: Path) -> None:
    storage = _copy(built, tmp_path / "r")
    shutil.rmtree(storage.local_path("ledger"))
    est = estimate(storage)
    train = next(s for s in est.sets if s.image_set == "train")
    assert train.remaining_rows == train.planned
    assert train.disk_bytes == int(train.transfer_bytes * DEFAULT_STORED_RATIO)
    assert "default" in train.disk_basis and "RESULTS.md" in train.rate_basis


def test_a_root_without_a_plan_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no plan"):
        estimate(Storage(str(tmp_path)))


def test_the_command_prints_a_table_or_json_and_refuses_a_missing_root(built: Path, tmp_path: Path) -> None:
    storage = _copy(built, tmp_path / "r")
    shutil.rmtree(storage.local_path(LAYOUT.ledger_dir("train")))
    runner = CliRunner()
    table = runner.invoke(app, ["estimate", "--root", str(storage.root), "--link-mbps", "50"])
    assert table.exit_code == 0, table.output
    assert "train" in table.output and "wall time on" in table.output and "transfer" in table.output
    out = runner.invoke(app, ["estimate", "--root", str(storage.root), "--json", "--workers", "3"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["workers"] == 3 and doc["link_mbps"] is None
    assert next(s for s in doc["sets"] if s["image_set"] == "train")["remaining_rows"] > 0
    finished = runner.invoke(app, ["estimate", "--root", str(built)])
    assert finished.exit_code == 0 and "nothing left to do" in finished.output
    missing = runner.invoke(app, ["estimate", "--root", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
