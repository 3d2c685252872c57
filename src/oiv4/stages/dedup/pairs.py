"""Duplicate pairs from a table of (set, image_id, phash, checksum[, OriginalMD5, OriginalURL]) rows.

Pure functions over Arrow tables, independent of where the hashes come from (the fetch ledger, `oiv4 hash`
for archive sets, a test's planted corpus).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import DedupError
from oiv4.stages.dedup.index import near_pairs

#: Default Hamming threshold (bits of 64). Measured on planted duplicates (benchmarks/RESULTS.md,
#: "Duplicates"): re-encodes, resizes, recolours and rotations sit at 0-3 bits, crops of 3-5% at 2-13;
#: the closest hard negative (another shot of the same scene) at 14. 8 keeps recall >= 0.95 with a margin
#: of 6 bits below the negatives, and on uniform hashes leaves ~1e4 chance pairs in 9.18M x 9.18M.
DEFAULT_THRESHOLD = 8

#: The exact kinds, strongest first, and the column each is read from. A pair that is several kinds at once
#: is reported once, as the first kind.
EXACT_KINDS: tuple[tuple[str, str], ...] = (
    ("same_md5", "OriginalMD5"),  # the same original file behind two ImageIDs
    ("same_checksum", "checksum"),  # the same stored bytes
    ("same_url", "OriginalURL"),  # the same Flickr URL listed twice
)
NEAR = "near"
NEAR_ROTATED = "near_rotated"

PAIRS_SCHEMA = pa.schema(
    [
        pa.field("id_a", pa.string(), nullable=False),
        pa.field("set_a", pa.string(), nullable=False),
        pa.field("id_b", pa.string(), nullable=False),
        pa.field("set_b", pa.string(), nullable=False),
        pa.field("distance", pa.int16(), nullable=False),  # Hamming bits; 0 for exact kinds
        pa.field("kind", pa.string(), nullable=False),
    ]
)

EXCLUSIONS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string(), nullable=False),
        pa.field("duplicate_set", pa.string(), nullable=False),
        pa.field("distance", pa.int16(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
    ]
)


def _same_value_pairs(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(i, j), i < j, for every two non-null rows holding the same value."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    enc = pc.dictionary_encode(arr)
    idx = np.asarray(enc.indices.fill_null(-1), dtype=np.int64)
    rows = np.flatnonzero(idx >= 0)
    order = rows[np.argsort(idx[rows], kind="stable")]
    keys = idx[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    out_i, out_j = [], []
    # Groups are tiny (a duplicate is rare), so walk offsets within runs rather than expanding each group.
    for d in range(1, int(sizes.max(initial=1))):
        pos = np.flatnonzero(keys[d:] == keys[:-d])
        out_i.append(order[pos])
        out_j.append(order[pos + d])
    if not out_i:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    i, j = np.concatenate(out_i), np.concatenate(out_j)
    return np.minimum(i, j), np.maximum(i, j)


def _check(table: pa.Table) -> None:
    missing = [c for c in ("set", "image_id") if c not in table.column_names]
    if missing:
        raise DedupError(f"dedup input has no {', '.join(missing)} column (have: {', '.join(table.column_names)})")
    if "phash" in table.column_names and not pa.types.is_unsigned_integer(table["phash"].type):
        raise DedupError(f"dedup input column phash must be uint64, not {table['phash'].type}")


def find_duplicates(table: pa.Table, threshold: int = DEFAULT_THRESHOLD, threads: int = 2) -> pa.Table:
    """Every duplicate pair within and across sets (PAIRS_SCHEMA), each pair once, ordered a < b by (set, id).

    `table` has `set` and `image_id` and any of `phash` (uint64, null when unknown), `checksum`, `OriginalMD5`,
    `OriginalURL`; a missing or null value just finds nothing through that column. Exact kinds win over near.
    """
    _check(table)
    found: dict[tuple[int, int], tuple[int, str]] = {}
    for kind, column in EXACT_KINDS:
        if column in table.column_names:
            for i, j in zip(*_same_value_pairs(table[column]), strict=True):
                found.setdefault((int(i), int(j)), (0, kind))
    n_exact = len(found)
    i_near = j_near = d_near = np.zeros(0, dtype=np.int64)
    rot = np.zeros(0, dtype=bool)
    if "phash" in table.column_names:
        col = table["phash"].combine_chunks()
        have = np.flatnonzero(np.asarray(col.is_valid()))
        hashes = np.asarray(col.fill_null(0), dtype=np.uint64)[have]
        i, j, d, rot = near_pairs(hashes, threshold, threads)
        i_near, j_near, d_near = have[i], have[j], d
    if n_exact:
        ex = np.array(list(found.keys()), dtype=np.int64).reshape(-1, 2)
        ex_d = np.zeros(len(ex), dtype=np.int64)
        ex_kind = np.array([k for _, k in found.values()], dtype=object)
        # a near pair that is also exact is reported as exact
        key_ex = ex[:, 0] * (table.num_rows + 1) + ex[:, 1]
        near_keep = ~np.isin(i_near * (table.num_rows + 1) + j_near, key_ex)
    else:
        ex = np.zeros((0, 2), dtype=np.int64)
        ex_d, ex_kind = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
        near_keep = np.ones(len(i_near), dtype=bool)
    near_kind = np.where(rot[near_keep], NEAR_ROTATED, NEAR).astype(object)
    i = np.concatenate([ex[:, 0], i_near[near_keep]])
    j = np.concatenate([ex[:, 1], j_near[near_keep]])
    dist = np.concatenate([ex_d, d_near[near_keep]])
    kinds = np.concatenate([ex_kind, near_kind])
    return _ordered_pairs(table, i, j, dist, kinds)


def _ordered_pairs(table: pa.Table, i: np.ndarray, j: np.ndarray, dist: np.ndarray, kinds: np.ndarray) -> pa.Table:
    sets = table["set"].combine_chunks().cast(pa.string())
    ids = table["image_id"].combine_chunks().cast(pa.string())
    # only the rows in pairs get a sort key (joining all 9M rows' strings first would cost ~300 MB)
    ti, tj = pa.array(i, pa.int64()), pa.array(j, pa.int64())
    ka = pc.binary_join_element_wise(sets.take(ti), ids.take(ti), "\x00")
    kb = pc.binary_join_element_wise(sets.take(tj), ids.take(tj), "\x00")
    swap = np.asarray(pc.greater(ka, kb).fill_null(False), dtype=bool)
    a = np.where(swap, j, i)
    b = np.where(swap, i, j)
    out = pa.table(
        {
            "id_a": ids.take(pa.array(a, pa.int64())),
            "set_a": sets.take(pa.array(a, pa.int64())),
            "id_b": ids.take(pa.array(b, pa.int64())),
            "set_b": sets.take(pa.array(b, pa.int64())),
            "distance": pa.array(dist, pa.int16()),
            "kind": pa.array(kinds.tolist(), pa.string()),
        },
        schema=PAIRS_SCHEMA,
    )
    return out.sort_by([("set_a", "ascending"), ("id_a", "ascending"), ("set_b", "ascending"), ("id_b", "ascending")])


def exclusions(
    pairs: pa.Table, keep_set: str = "train", against: tuple[str, ...] = ("targets", "validation")
) -> pa.Table:
    """Rows of `keep_set` to drop because they duplicate an image of a set in `against` (EXCLUSIONS_SCHEMA).

    One row per (image, duplicate); an image with several duplicates appears several times, closest first.
    Pairs within `keep_set` itself are not exclusions (the set keeps one of each, or both: the caller decides).
    """
    against_arr = pa.array(list(against), pa.string())
    halves = []
    for mine, other in (("a", "b"), ("b", "a")):
        sel = pairs.filter(
            pc.and_(pc.equal(pairs[f"set_{mine}"], keep_set), pc.is_in(pairs[f"set_{other}"], value_set=against_arr))
        )
        halves.append(
            pa.table(
                {
                    "image_id": sel[f"id_{mine}"],
                    "duplicate_of": sel[f"id_{other}"],
                    "duplicate_set": sel[f"set_{other}"],
                    "distance": sel["distance"],
                    "kind": sel["kind"],
                },
                schema=EXCLUSIONS_SCHEMA,
            )
        )
    out = pa.concat_tables(halves)
    return out.sort_by([("image_id", "ascending"), ("distance", "ascending"), ("duplicate_of", "ascending")])
