"""Held out means held out: duplicates within and across sets, measured on planted copies."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.fingerprint import hamming, phash, rotations
from oiv4.io.ledger_write import append_rows
from oiv4.io.storage import TMP_MARK, Storage
from oiv4.stages.dedup import DEFAULT_THRESHOLD, DedupSettings, exclusions, find_duplicates, read_pairs, run_dedup
from oiv4.stages.dedup.index import near_pairs
from oiv4.stages.dedup.run import dedup_table, hashed_rows
from oiv4_mirror.duplicates import COPIES, planted_corpus


def _id(n: int) -> str:
    return f"{n:016x}"


def _table(sets: list[str], hashes: list[int | None], **extra: list[object]) -> pa.Table:
    cols: dict[str, object] = {
        "set": sets,
        "image_id": [_id(i) for i in range(len(sets))],
        "phash": pa.array(hashes, pa.uint64()),
    }
    cols.update(extra)
    return pa.table(cols)


@pytest.fixture(scope="module")
def planted() -> tuple[pa.Table, dict[str, int], dict[str, str]]:
    """Originals held out in targets, every copy and hard negative in train: the leak the issue is about."""
    items = list(planted_corpus(24, seed=11))
    table = _table(
        ["targets" if p.variant == "original" else "train" for p in items], [int(phash(p.image)) for p in items]
    )
    groups = {_id(i): p.group for i, p in enumerate(items)}
    variants = {_id(i): p.variant for i, p in enumerate(items)}
    return table, groups, variants


def test_planted_copies_are_found_with_high_recall_and_no_false_pairs(planted) -> None:
    table, groups, variants = planted
    pairs = find_duplicates(table, DEFAULT_THRESHOLD)
    ids_a, ids_b = pairs["id_a"].to_pylist(), pairs["id_b"].to_pylist()
    correct = [groups[a] >= 0 and groups[a] == groups[b] for a, b in zip(ids_a, ids_b, strict=True)]
    precision = sum(correct) / len(correct)
    # Recall over (held-out original, copy) pairs: the leak a reader must drop. Thresholds justified in
    # benchmarks/RESULTS.md ("Duplicates"): crops of 3-5% are the only copies that reach 9-13 bits.
    found = {frozenset(p) for p in zip(ids_a, ids_b, strict=True)}
    originals = {groups[i]: i for i, v in variants.items() if v == "original"}
    wanted = [frozenset((originals[groups[i]], i)) for i, v in variants.items() if v in COPIES]
    recall = sum(w in found for w in wanted) / len(wanted)
    assert precision >= 0.99, precision
    assert recall >= 0.95, recall
    by_variant = Counter(variants[i] for w in wanted if w in found for i in w if variants[i] != "original")
    for rotated in ("rot90", "rot180", "rot270", "reencode_q60", "resize_50", "recolour"):
        assert by_variant[rotated] == 24, (rotated, by_variant)  # the easy copies: every single one


def test_rotated_copies_are_reported_as_near_rotated(planted) -> None:
    table, _, variants = planted
    pairs = find_duplicates(table, DEFAULT_THRESHOLD)
    for a, b, kind in zip(pairs["id_a"].to_pylist(), pairs["id_b"].to_pylist(), pairs["kind"].to_pylist(), strict=True):
        if {variants[a], variants[b]} == {"original", "rot90"}:
            assert kind == "near_rotated"
        if {variants[a], variants[b]} == {"original", "reencode_q60"}:
            assert kind == "near"


def test_exclusions_list_every_train_copy_of_a_held_out_image_and_nothing_else(planted) -> None:
    table, groups, variants = planted
    pairs = find_duplicates(table, DEFAULT_THRESHOLD)
    out = exclusions(pairs, keep_set="train", against=("targets", "validation"))
    assert out.column_names == ["image_id", "duplicate_of", "duplicate_set", "distance", "kind"]
    assert set(out["duplicate_set"].to_pylist()) == {"targets"}
    for image_id, dup in zip(out["image_id"].to_pylist(), out["duplicate_of"].to_pylist(), strict=True):
        assert variants[dup] == "original" and groups[image_id] == groups[dup]
    assert not {i for i, v in variants.items() if v in ("other_shot", "neighbour")} & set(out["image_id"].to_pylist())
    assert exclusions(pairs, keep_set="train", against=("validation",)).num_rows == 0


def test_near_pairs_match_brute_force_exactly_up_to_the_threshold() -> None:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 2**63, 1500, dtype=np.uint64) * np.uint64(2)
    # plant neighbours at every distance 0..12 so the edge of the threshold is exercised
    flips = [
        np.bitwise_or.reduce(np.uint64(1) << rng.choice(64, d, replace=False).astype(np.uint64)) if d else np.uint64(0)
        for d in range(13)
        for _ in range(20)
    ]
    hashes = np.concatenate([base, base[: len(flips)] ^ np.array(flips, dtype=np.uint64)])
    for k in (3, 8):
        i, j, d, rot = near_pairs(hashes, k)
        unrotated = {(a, b) for a, b, r in zip(i.tolist(), j.tolist(), rot.tolist(), strict=True) if not r}
        dist = hamming(hashes[:, None], hashes[None, :])
        brute = {(a, b) for a, b in zip(*np.nonzero(np.triu(dist <= k, 1)), strict=True)}
        assert unrotated == {(int(a), int(b)) for a, b in brute}
        assert all(dd <= k for dd in d.tolist())


def test_a_pair_found_only_after_rotation_is_within_the_threshold_at_that_rotation() -> None:
    h = np.random.default_rng(3).integers(0, 2**63, 300, dtype=np.uint64)
    turned = rotations(h[:50])[1] ^ np.uint64(0b101)  # 2 bits from a quarter turn of each of the first 50
    i, j, d, rot = near_pairs(np.concatenate([h, turned]), 4)
    got = {(int(a), int(b)) for a, b, r in zip(i, j, rot, strict=True) if r}
    assert {(n, 300 + n) for n in range(50)} <= got
    assert d.max() <= 4


def test_exact_duplicates_are_reported_once_as_their_strongest_kind() -> None:
    table = _table(
        ["train", "targets", "validation", "train", "extended_targets"],
        [1, 1, None, 2**40 - 1, 0xFFFF_0000_FFFF_0000],
        checksum=["c1", "c1", "c2", "c2", None],
        OriginalMD5=["m1", "m1", None, None, None],
        OriginalURL=[None, None, None, "u", "u"],
    )
    pairs = find_duplicates(table, 4)
    rows = {
        (a, b): (k, d)
        for a, b, k, d in zip(
            pairs["id_a"].to_pylist(),
            pairs["id_b"].to_pylist(),
            pairs["kind"].to_pylist(),
            pairs["distance"].to_pylist(),
            strict=True,
        )
    }
    # 0 and 1 share md5, checksum and hash: reported once, as md5; a is the smaller (set, id): targets < train
    assert rows[(_id(1), _id(0))] == ("same_md5", 0)
    assert rows[(_id(3), _id(2))] == ("same_checksum", 0)  # train < validation
    assert rows[(_id(4), _id(3))] == ("same_url", 0)  # extended_targets < train
    assert len(rows) == 3


def test_a_bad_threshold_or_input_is_a_one_line_error() -> None:
    table = _table(["train", "train"], [1, 2])
    with pytest.raises(ValueError, match=r"outside 0\.\.12 bits"):
        find_duplicates(table, 40)
    with pytest.raises(ValueError, match="no image_id column"):
        find_duplicates(table.drop_columns(["image_id"]), 4)
    with pytest.raises(ValueError, match="must be uint64"):
        find_duplicates(table.set_column(2, "phash", pa.array(["a", "b"])), 4)


def test_dedup_writes_pairs_and_a_summary_with_the_headline(tmp_path: Path, planted) -> None:
    table, _, _ = planted
    storage = Storage(str(tmp_path))
    summary = dedup_table(storage, table, DedupSettings())
    pairs = read_pairs(storage)
    assert pairs.num_rows == summary.pairs > 0
    assert pairs.equals(find_duplicates(table, DEFAULT_THRESHOLD))
    # every train copy of a planted original leaks; the hard negatives do not
    leaking = set(exclusions(pairs)["image_id"].to_pylist())
    assert summary.train_leaking == len(leaking) > 0
    assert summary.headline.startswith(f"{len(leaking)} train images duplicate a target or validation image")
    saved = json.loads((tmp_path / "dedup" / "summary.json").read_text())
    assert saved["headline"] == summary.headline
    counts = {(c["set"], c["against"]): c["images"] for c in saved["counts"]}
    assert counts[("train", "targets")] == len(leaking)
    assert counts[("targets", "train")] == 24
    assert not [p for p in tmp_path.rglob("*") if TMP_MARK in p.name]


def test_run_dedup_before_hashes_exist_says_which_command_to_run(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    manifest = pa.table({"row": [0], "ImageID": [_id(1)], "OriginalMD5": ["x"], "OriginalURL": ["u"]})
    sink = pa.BufferOutputStream()
    pq.write_table(manifest, sink)
    storage.write_bytes(LAYOUT.plan(ImageSet.train), sink.getvalue().to_pybytes())
    append_rows(storage, ImageSet.train, 0, [{"image_id": _id(1), "row": 0, "outcome": "ok", "reason": "stored"}])
    # Ledgers always have the columns now (null until hashed): the unhashed-rows message names the command.
    with pytest.raises(ValueError, match=r"^1 stored images of train have no phash yet: run `oiv4 hash"):
        run_dedup(storage, DedupSettings(sets=("train",)))


def test_dedup_refuses_a_set_whose_stored_images_are_not_all_hashed() -> None:
    ledger = pa.table(
        {
            "row": [0, 1, 2],
            "image_id": [_id(0), _id(1), _id(2)],
            "outcome": ["ok", "ok", "http_404"],
            "phash": pa.array([5, None, None], pa.uint64()),
            "checksum": ["a", None, None],
        }
    )
    with pytest.raises(ValueError, match=r"^1 stored images of targets have no phash yet: run `oiv4 hash"):
        hashed_rows(ledger, "targets")
    assert hashed_rows(ledger.slice(0, 1), "targets").num_rows == 1
    assert hashed_rows(ledger.filter(pa.array([True, False, True])), "targets")["image_id"].to_pylist() == [_id(0)]
