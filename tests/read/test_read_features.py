"""Reading features and ground truth: `ds[set].features(model)`, `ds.neighbors()`, the torch adapter's pairs."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import oiv4
from oiv4.cli import app
from oiv4.contracts.errors import ImageNotFoundError, InputError, IntegrityError
from oiv4.contracts.layout import LAYOUT
from support.feature_shards import write_features
from support.layout_builder import build_set

MODEL = "vgg16-fc2"


def test_features_are_memory_mapped_rows_in_plan_order(tmp_path) -> None:
    built = build_set(tmp_path, "validation", 30)
    ids = built.ok_ids
    vecs = np.random.default_rng(0).standard_normal((len(ids), 8)).astype(np.float16)
    write_features(tmp_path, MODEL, "validation", vecs, 7, ids)
    f = oiv4.open(tmp_path)["validation"].features(MODEL)
    assert f.ids.to_pylist() == ids
    assert (len(f), f.dim, f.dtype) == (len(ids), 8, np.float16)
    assert np.array_equal(f.array[5:19], vecs[5:19])  # crosses shard boundaries
    assert np.array_equal(f.array[[20, 3]], vecs[[20, 3]])
    assert np.array_equal(f.vector(ids[17]), vecs[17])
    assert isinstance(f._store.shards[0], np.memmap)


def test_unfinished_shard_is_ignored_and_damage_is_named(tmp_path) -> None:
    build_set(tmp_path, "validation", 10)
    write_features(tmp_path, MODEL, "validation", np.zeros((10, 4), np.float32), 5)
    (tmp_path / LAYOUT.features_metadata(MODEL, "validation", 1)).unlink()  # npy without metadata: unfinished
    assert len(oiv4.open(tmp_path)["validation"].features(MODEL)) == 5
    np.save(tmp_path / LAYOUT.features_npy(MODEL, "validation", 0), np.zeros((4, 4), np.float32))
    with pytest.raises(IntegrityError, match=r"metadata_00000\.parquet lists 5"):
        oiv4.open(tmp_path)["validation"].features(MODEL)


def test_missing_features_say_which_command_makes_them(tmp_path) -> None:
    build_set(tmp_path, "validation", 5)
    with pytest.raises(InputError, match="oiv4 features validation --model resnet50"):
        oiv4.open(tmp_path)["validation"].features("resnet50")


def test_neighbors_read_back_as_arrow_and_duckdb(tmp_path) -> None:
    write_features(tmp_path, MODEL, "targets", np.random.default_rng(1).standard_normal((40, 4)).astype(np.float16))
    build_set(tmp_path, "targets", 3)
    r = CliRunner().invoke(
        app, ["neighbors", "-r", str(tmp_path), "--queries", "targets:5", "--database", "targets", "--k", "3"]
    )
    assert r.exit_code == 0, r.output
    ds = oiv4.open(tmp_path)
    table = ds.neighbors(MODEL)
    assert table.num_rows == 15 and table.column_names == [
        "query_id",
        "rank",
        "neighbor_id",
        "neighbor_set",
        "distance",
    ]
    assert ds.neighbors(MODEL, "targets.5s0-targets", duckdb=True).count("*").fetchall()[0][0] == 15


def test_torch_adapter_yields_image_vector_pairs(tmp_path) -> None:
    built = build_set(tmp_path, "validation", 6)
    vecs = np.arange(len(built.ok_ids) * 3, dtype=np.float32).reshape(-1, 3)
    write_features(tmp_path, MODEL, "validation", vecs, 4, built.ok_ids)
    data = oiv4.open(tmp_path)["validation"].torch(with_ids=True, features=MODEL)
    image_id, (img, vec) = data[4]
    assert image_id == built.ok_ids[4] and img.mode == "RGB" and np.array_equal(vec, vecs[4])


def test_an_unknown_id_and_a_set_without_features_are_one_clear_error_each(tmp_path) -> None:
    built = build_set(tmp_path, "validation", 6)
    write_features(tmp_path, MODEL, "validation", np.ones((len(built.ok_ids), 3), np.float16), 4, built.ok_ids)
    build_set(tmp_path, "targets", 3)
    ds = oiv4.open(tmp_path)
    with pytest.raises(ImageNotFoundError, match=r"^ffffffffffffffff has no vgg16-fc2 vector in validation$"):
        ds["validation"].features(MODEL).vector("ffffffffffffffff")
    with pytest.raises(InputError, match=r"no vgg16-fc2 features for targets .*run `oiv4 features targets --model"):
        ds["targets"].torch(features=MODEL)
    with pytest.raises(InputError, match=r"no single vgg16-fc2 ground truth .*\(present: none\); run `oiv4 neighbors"):
        ds.neighbors(MODEL)


def test_a_truncated_npy_is_a_damaged_features_error_pointing_at_the_command_that_names_it(tmp_path) -> None:
    build_set(tmp_path, "validation", 10)
    write_features(tmp_path, MODEL, "validation", np.zeros((10, 4), np.float32), 5)
    npy = tmp_path / LAYOUT.features_npy(MODEL, "validation", 1)
    npy.write_bytes(npy.read_bytes()[:-40])
    with pytest.raises(
        IntegrityError, match=r"img_emb_00001.npy is damaged .*`oiv4 features validation --model vgg16-fc2` again"
    ):
        oiv4.open(tmp_path)["validation"].features(MODEL)
