"""`oiv4 dedup`: hashes from the ledgers + identities from the plan -> `dedup/pairs.parquet` and a summary.

Held out means held out: research trains on `train` and searches `targets` / `extended_targets`, so an image of
train that is a copy of a target or validation image inflates retrieval scores. The summary states that number
first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oiv4.contracts.errors import DedupError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.limits import at_least, within
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.setting import setting
from oiv4.io.damage import reading
from oiv4.io.ledger import read_set
from oiv4.io.manifest import read_manifest
from oiv4.io.storage import Storage
from oiv4.stages.dedup.pairs import DEFAULT_THRESHOLD, find_duplicates

PAIRS_REL = LAYOUT.dedup_pairs()
SUMMARY_REL = LAYOUT.dedup_summary()
#: The sets training must not see.
HELD_OUT: tuple[str, ...] = (ImageSet.targets.value, ImageSet.validation.value)


@dataclass(frozen=True)
class DedupSettings:
    """What `run_dedup` compares and how close counts as a duplicate."""

    #: See pairs.DEFAULT_THRESHOLD for the measurement behind the default.
    threshold: int = setting(
        DEFAULT_THRESHOLD,
        help="Hamming bits of 64 within which two images are duplicates.",
        flag="--threshold",
        short="-k",
    )
    sets: tuple[str, ...] = setting(
        tuple(s.value for s in ImageSet),
        help="The sets compared.",
        cli=False,
        why="`oiv4 dedup` compares every set with a ledger: it finds them itself",
    )
    threads: int = setting(
        2, help="2: the unrotated and the rotated search run side by side; 1: one after the other.", flag="--threads"
    )

    def __post_init__(self) -> None:
        within(self, 0, 32, "threshold")
        at_least(self, 1, "threads")


@dataclass(frozen=True, order=True)
class SetPairCount:
    """How many images of `set` have at least one duplicate in `against` (same set: within the set)."""

    set: str
    against: str
    images: int


@dataclass(frozen=True)
class DedupSummary:
    """What `oiv4 dedup` found; `headline` is the sentence a reader needs first."""

    threshold: int
    images: int  # images compared (those with a hash or an identity)
    pairs: int
    pairs_by_kind: dict[str, int]
    train_leaking: int  # train images duplicating a targets or validation image
    counts: list[SetPairCount] = field(default_factory=list)

    @property
    def headline(self) -> str:
        return (
            f"{self.train_leaking} train images duplicate a target or validation image "
            f"(threshold {self.threshold} bits; {self.pairs} duplicate pairs among {self.images} images)"
        )

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "headline": self.headline}, indent=2, sort_keys=True)


def hashed_rows(ledger: pa.Table, name: str) -> pa.Table:
    """(row, image_id, phash, checksum) of a set's `ok` ledger rows; DedupError when any is not hashed yet."""
    if "phash" not in ledger.column_names or "checksum" not in ledger.column_names:
        raise DedupError(f"the ledger of {name} has no phash/checksum columns: run `oiv4 hash --root R` first")
    ok = ledger.filter(pc.equal(ledger["outcome"], "ok")).select(["row", "image_id", "phash", "checksum"])
    unhashed = ok["phash"].null_count
    if unhashed:  # stored before hashing existed: comparing without them would silently miss duplicates
        raise DedupError(f"{unhashed} stored images of {name} have no phash yet: run `oiv4 hash --root R` first")
    return ok


def load_hash_table(storage: Storage, sets: tuple[str, ...]) -> pa.Table:
    """(set, image_id, phash, checksum, OriginalMD5, OriginalURL) for every `ok` image of `sets`.

    phash and checksum come from the ledger (written by the fetch transform, or by `oiv4 hash` for archive
    sets); OriginalMD5 and OriginalURL from the plan manifest, joined on `row`. Raises DedupError, one line,
    when a set has no plan or its ledger has no phash column yet.
    """
    parts = []
    for name in sets:
        ok = hashed_rows(read_set(storage, name), name)
        try:
            plan = read_manifest(storage, name, ["row", "OriginalMD5", "OriginalURL"])
        except FileNotFoundError:
            raise DedupError(f"{name} has no plan manifest under {storage.root}: run `oiv4 plan` first") from None
        joined = ok.join(plan, "row", join_type="left outer").drop_columns(["row"])
        parts.append(joined.append_column("set", pa.array([name] * joined.num_rows, pa.string())))
    cols = ["set", "image_id", "phash", "checksum", "OriginalMD5", "OriginalURL"]
    return pa.concat_tables([p.select(cols) for p in parts]) if parts else pa.table({c: [] for c in cols})


def summarise(pairs: pa.Table, table: pa.Table, threshold: int) -> DedupSummary:
    """Per ordered pair of sets, the images of the first having a duplicate in the second; and the headline."""
    both = pa.concat_tables(
        [
            pairs.select(["set_a", "id_a", "set_b"]).rename_columns(["set", "image_id", "against"]),
            pairs.select(["set_b", "id_b", "set_a"]).rename_columns(["set", "image_id", "against"]),
        ]
    )
    per = both.group_by(["set", "against"]).aggregate([("image_id", "count_distinct")])
    counts = sorted(
        SetPairCount(s, a, int(n))
        for s, a, n in zip(
            per["set"].to_pylist(), per["against"].to_pylist(), per["image_id_count_distinct"].to_pylist(), strict=True
        )
    )
    leak = both.filter(
        pc.and_(pc.equal(both["set"], ImageSet.train.value), pc.is_in(both["against"], pa.array(list(HELD_OUT))))
    )
    kinds = pairs.group_by("kind").aggregate([("kind", "count")])
    return DedupSummary(
        threshold=threshold,
        images=table.num_rows,
        pairs=pairs.num_rows,
        pairs_by_kind=dict(zip(kinds["kind"].to_pylist(), kinds["kind_count"].to_pylist(), strict=True)),
        train_leaking=len(set(leak["image_id"].to_pylist())),
        counts=counts,
    )


def dedup_table(storage: Storage, table: pa.Table, settings: DedupSettings) -> DedupSummary:
    """find_duplicates over `table`, then write `dedup/pairs.parquet` and `dedup/summary.json` atomically."""
    pairs = find_duplicates(table, settings.threshold, settings.threads)
    sink = pa.BufferOutputStream()
    pq.write_table(pairs, sink, compression="zstd")
    storage.write_bytes(PAIRS_REL, sink.getvalue().to_pybytes())
    summary = summarise(pairs, table, settings.threshold)
    storage.write_bytes(SUMMARY_REL, summary.to_json().encode())
    return summary


def run_dedup(storage: Storage, settings: DedupSettings) -> DedupSummary:
    """The stage: load hashes and identities of `settings.sets`, find duplicates, write pairs and summary."""
    return dedup_table(storage, load_hash_table(storage, settings.sets), settings)


def read_pairs(storage: Storage) -> pa.Table:
    """`dedup/pairs.parquet` as written by `run_dedup`."""
    with reading(storage, PAIRS_REL), storage.open(PAIRS_REL) as fh:
        return pq.read_table(fh)
