from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from oiv4.contracts.errors import PlanError
from oiv4.contracts.layout import BOXABLE_CSV, FULL_CSV
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.manifest import read_manifest
from oiv4.io.storage import Storage
from oiv4.stages.plan import PlanSettings, build_plan
from support.metadata_factory import expected_sets, make_universe, write_csv


def _root(tmp_path: Path, full: list[dict], boxable: list[dict]) -> Storage:
    write_csv(tmp_path / "metadata" / FULL_CSV, full)
    write_csv(tmp_path / "metadata" / BOXABLE_CSV, boxable)
    return Storage(str(tmp_path))


def test_plan_matches_the_notebooks_definition_in_file_order(tmp_path: Path) -> None:
    full, boxable = make_universe(seed=1, n_train=900, n_val=60, n_test=40, n_box=250)
    storage = _root(tmp_path, full, boxable)
    summary = build_plan(storage, PlanSettings(train_size=400, shard_rows=100))
    want = expected_sets(full, boxable, train_size=400)
    for name, ids in want.items():
        table = read_manifest(storage, name)
        assert table.column("ImageID").to_pylist() == ids, name
        assert table.column("row").to_pylist() == list(range(len(ids)))
        assert summary.counts[name] == len(ids)
    assert summary.subset_counts == {"train": 900, "validation": 60, "test": 40}


def test_plan_keeps_every_metadata_column_and_parses_rotation(tmp_path: Path) -> None:
    full, boxable = make_universe(seed=2, n_train=200, n_val=10, n_test=5, n_box=50)
    storage = _root(tmp_path, full, boxable)
    build_plan(storage, PlanSettings(train_size=100))
    train = read_manifest(storage, "train").to_pylist()
    by_id = {r["ImageID"]: r for r in full}
    for row in train:
        src = by_id[row["ImageID"]]
        for col in ("OriginalURL", "Author", "Title", "OriginalMD5", "License"):
            assert (row[col] or "") == src[col], col
        assert row["OriginalSize"] == int(src["OriginalSize"])
        if src["Rotation"]:
            assert row["Rotation"] == float(src["Rotation"])
        else:
            assert row["Rotation"] is None  # empty in the CSV -> null, never a fake 0
    titles = {r["Title"] for r in train}
    assert "日本の風景" in titles and 'Café, "quoted" & more' in titles and "multi\nline title" in titles


def test_plan_with_train_size_larger_than_candidates_leaves_extended_empty(tmp_path: Path) -> None:
    full, boxable = make_universe(seed=3, n_train=50, n_val=3, n_test=3, n_box=10)
    storage = _root(tmp_path, full, boxable)
    summary = build_plan(storage)
    assert summary.counts["train"] == 40 and summary.counts["extended_targets"] == 0


def test_hostile_image_id_is_reported_with_its_line_and_never_planned(tmp_path: Path) -> None:
    full, boxable = make_universe(seed=4, n_train=100, n_val=5, n_test=5, n_box=20)
    full[7]["ImageID"] = "../../etc/passwd"
    full[30]["OriginalMD5"] = ""
    full[41]["OriginalURL"] = "file:///etc/shadow"
    storage = _root(tmp_path, full, boxable)
    with pytest.raises(PlanError) as err:
        build_plan(storage)
    msg = str(err.value)
    lines = {(p.line, p.reason.split()[0]) for p in err.value.problems if p.file == FULL_CSV}
    # header is line 1; a title with an embedded newline shifts later records by a line, so find them:
    text = (tmp_path / "metadata" / FULL_CSV).read_text().splitlines()
    line_of = {
        needle: i + 1
        for i, t in enumerate(text)
        for needle in ("../../etc/passwd", "file:///etc/shadow")
        if needle in t
    }
    assert (line_of["../../etc/passwd"], "ImageID") in lines
    assert (line_of["file:///etc/shadow"], "OriginalURL") in lines
    assert any(p.reason.startswith("OriginalMD5") for p in err.value.problems)
    assert "--skip-invalid" in msg
    assert not (tmp_path / "plan" / "train.parquet").exists()
    assert not list((tmp_path / "plan").glob("*.parquet")) if (tmp_path / "plan").exists() else True


def test_skip_invalid_plans_without_bad_rows_and_records_them(tmp_path: Path) -> None:
    full, boxable = make_universe(seed=5, n_train=100, n_val=5, n_test=5, n_box=20)
    bad_id = "ABCDEF0123456789"  # uppercase: not an ImageID
    target = next(r for r in full if r["Subset"] == "train" and r not in boxable)
    target["ImageID"] = bad_id
    storage = _root(tmp_path, full, boxable)
    summary = build_plan(storage, PlanSettings(skip_invalid=True))
    assert summary.rejected == 1
    rejected = pq.read_table(tmp_path / "plan" / "rejected.parquet").to_pylist()
    assert rejected[0]["image_id"] == bad_id and rejected[0]["line"] > 1
    all_ids = {
        i for s in ("train", "extended_targets") for i in read_manifest(storage, s).column("ImageID").to_pylist()
    }
    assert bad_id not in all_ids


def test_malformed_line_is_reported_with_its_line_number(tmp_path: Path) -> None:
    full, boxable = make_universe(seed=6, n_train=60, n_val=5, n_test=5, n_box=10)
    path = _root(tmp_path, full, boxable).path("metadata/" + FULL_CSV)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("0123456789abcdef,train,https://x/y.jpg\n")
    total_lines = len(Path(path).read_text().splitlines())
    with pytest.raises(PlanError) as err:
        build_plan(Storage(str(tmp_path)))
    assert [p.line for p in err.value.problems] == [total_lines]
    assert "malformed line" in str(err.value)


def test_wrong_header_fails_loudly(tmp_path: Path) -> None:
    full, boxable = make_universe(seed=7, n_train=20, n_val=2, n_test=2, n_box=5)
    storage = _root(tmp_path, full, boxable)
    header = ("ImageID", "Subset", "OriginalURL")
    write_csv(tmp_path / "metadata" / FULL_CSV, [], header=header)
    with pytest.raises(PlanError, match="unexpected header"):
        build_plan(storage)


def test_duplicate_image_id_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    full, boxable = make_universe(seed=8, n_train=50, n_val=5, n_test=5, n_box=10)
    cands = [r for r in full if r["Subset"] == "train" and r not in boxable]
    cands[5]["ImageID"] = cands[2]["ImageID"]
    storage = _root(tmp_path, full, boxable)
    with pytest.raises(PlanError, match="duplicate ImageID") as err:
        build_plan(storage, PlanSettings(skip_invalid=True))
    assert len([p for p in err.value.problems if "duplicate" in p.reason]) == 2


def test_replan_reuses_an_up_to_date_plan(tmp_path: Path) -> None:
    full, boxable = make_universe(seed=9, n_train=50, n_val=5, n_test=5, n_box=10)
    storage = _root(tmp_path, full, boxable)
    first = build_plan(storage, PlanSettings(train_size=10))
    again = build_plan(storage, PlanSettings(train_size=10))
    assert again.reused and again.counts == first.counts


def test_plan_cli_prints_counts_and_errors_cleanly(tmp_path: Path) -> None:
    full, boxable = make_universe(seed=10, n_train=50, n_val=5, n_test=5, n_box=10)
    _root(tmp_path, full, boxable)
    ok = subprocess.run(
        [sys.executable, "-m", "oiv4", "plan", "--root", str(tmp_path), "--train-size", "20"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "extended_targets" in ok.stdout and "20" in ok.stdout
    (tmp_path / "plan" / "summary.json").unlink()
    full[3]["ImageID"] = "bad/id"
    write_csv(tmp_path / "metadata" / FULL_CSV, full)
    bad = subprocess.run(
        [sys.executable, "-m", "oiv4", "plan", "--root", str(tmp_path), "--force"], capture_output=True, text=True
    )
    assert bad.returncode == 3  # InputError: the metadata itself is malformed
    assert "Traceback" not in bad.stderr and "bad/id" in bad.stderr


def test_metadata_and_plan_work_on_an_s3_root(tmp_path: Path, s3_root: tuple[str, dict[str, str]]) -> None:
    from oiv4.stages.metadata import MetadataSettings, fetch_metadata
    from oiv4_mirror import UniverseSpec, start_mirror

    root, options = s3_root
    storage = Storage(root, options)
    with start_mirror(UniverseSpec(seed=12, n_images=80, megapixels=(0.02, 0.05)), cache_dir=tmp_path / "c") as mirror:
        fetch_metadata(
            storage,
            MetadataSettings(base_url=mirror.metadata_base_url, transfer=TransferSettings(allow_private_networks=True)),
        )
        universe = mirror.universe
    summary = build_plan(storage, PlanSettings(train_size=10))
    assert summary.counts["targets"] == len(universe.boxable_ids())
    assert read_manifest(storage, "train").column("ImageID").to_pylist() == universe.url_set_ids()[:10]
    assert read_manifest(storage, "extended_targets").column("ImageID").to_pylist() == universe.url_set_ids()[10:]
