"""Trust what is on disk: check every `ok` ledger row against the stored bytes, and every stored file against the ledger.

Checks, per set:
- every `ok` row's location exists (file, archive, archive member)            -> `missing`
- its stored size equals the ledger's `stored_bytes`                          -> `size_mismatch`
- every zip's central directory / tar's headers parse and are consistent     -> `bad_archive`
- unless `fast`: every image is read; a zip member's CRC-32 must match        -> `damaged`
  and the bytes must hash to the ledger's `checksum` (io.checksum)           -> `checksum_mismatch`
  rows recorded without a checksum (`oiv4 hash` records them)                 -> `unverifiable` (warning)
- deep only: every image decodes strictly at full size (io.strict_decode)     -> `corrupt_jpeg`, `undecodable`
- files and archive members no `ok` row points at                            -> `orphan` (warning)
- temp files a killed writer left behind                                     -> `stray_temp` (warning)
- images still staged because their shard's archive is not packed yet         -> `staged` (warning)

`requeue=True` appends one ledger row per broken image with outcome `verify_failed` (and the reason), so
`oiv4 fetch --retry-failed verify_failed` fetches them again. Verify never deletes or rewrites a stored
file: the only thing it ever writes is those ledger rows.

At scale (9M rows) the cheap checks are vectorised over Arrow batches of the resolved ledger (one batch of
shards at a time): locations are matched against the inventory's keys with one hash lookup per batch, and
findings are kept as counts, a table of broken rows (for requeue) and a bounded list of examples. The content
checks read one slice of rows at a time with `workers` threads; they read every stored byte once, so the
default verify costs what reading the data costs (xxh3-128 hashes at ~35-90 GB/s a core, far above a disk).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import UsageError
from oiv4.contracts.ledger_row import LedgerRow
from oiv4.contracts.limits import at_least
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.contracts.setting import setting
from oiv4.io.containers import BlobReader
from oiv4.io.inventory import scan_set
from oiv4.io.ledger import iter_ledger, list_ledger, read_ledger
from oiv4.io.ledger_write import append_rows, now_utc
from oiv4.io.manifest import plan_rows
from oiv4.io.storage import Storage
from oiv4.stages.verify.checks import check_rows, index_stored, orphans
from oiv4.stages.verify.content import ContentProgress, ProgressFn, check_content
from oiv4.stages.verify.findings import (
    BROKEN_KINDS,
    EXAMPLES_PER_KIND,
    VERIFY_COLUMNS,
    WARNING_KINDS,
    Problem,
    SetCheck,
)

#: Rows checked at a time (bounds verify's temporaries to a few hundred MB).
SLICE_ROWS = 250_000


@dataclass
class VerifyReport:
    """The result of `verify`: one SetCheck per set present; `ok` is False when anything is broken."""

    root: str
    deep: bool
    fast: bool = False
    sets: list[SetCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(s.count(k) for s in self.sets for k in BROKEN_KINDS)

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.sets for p in s.problems]


@dataclass(frozen=True)
class VerifySettings:
    """By default every image is read and hashed; `fast` only checks sizes, `deep` also decodes strictly;
    `requeue` records broken ones as `verify_failed`."""

    deep: bool = setting(
        False,
        help="Also decode every image strictly at full size (libjpeg-turbo; a 'Corrupt JPEG data' warning is "
        "corrupt_jpeg). CPU-bound: ~10-30 ms per image a core.",
        flag="--deep/--no-deep",
    )
    fast: bool = setting(
        False,
        help="Only check that every file/member exists with the ledger's size: no data read, so no checksum "
        "or CRC check (a flipped bit or a zeroed block goes unseen).",
        flag="--fast/--no-fast",
    )
    requeue: bool = setting(
        False,
        help="Append a `verify_failed` ledger row for each broken image, so `oiv4 fetch --retry-failed verify_failed` "
        "redoes it. Stored files are never modified or deleted.",
        flag="--requeue/--no-requeue",
    )
    sets: tuple[str, ...] | None = setting(
        None,
        help="Only this set (repeatable).",
        flag="--set",
        short="-s",
        default_text="every set present",
        choices=tuple(s.value for s in ImageSet),
    )
    #: File reads, zlib, xxh3 and libjpeg-turbo release the GIL, so threads do scale here.
    workers: int = setting(4, help="Threads reading, hashing and (--deep) decoding images.", flag="--workers")

    def __post_init__(self) -> None:
        at_least(self, 1, "workers")
        if self.deep and self.fast:
            raise UsageError("--deep and --fast contradict each other: --deep reads and decodes everything")


def verify(
    root: str | Storage,
    settings: VerifySettings | None = None,
    *,
    on_progress: ProgressFn | None = None,
    **storage_options: Any,
) -> VerifyReport:
    """Check the sets under `root` (see the module docstring for what is checked)."""
    settings = settings or VerifySettings()
    storage = root if isinstance(root, Storage) else Storage(str(root), storage_options)
    names = [ImageSet(s) for s in settings.sets] if settings.sets else list(ImageSet)
    report = VerifyReport(storage.root, settings.deep, settings.fast)
    for image_set in names:
        check = verify_set(storage, image_set, settings, on_progress=on_progress)
        if check is not None:
            report.sets.append(check)
    return report


def verify_set(
    storage: Storage,
    image_set: ImageSet,
    settings: VerifySettings,
    *,
    on_progress: ProgressFn | None = None,
) -> SetCheck | None:
    """Check one set; None when the root holds nothing of it (no plan, ledger or files)."""
    files = list_ledger(storage, image_set)
    inv = scan_set(storage, image_set)
    planned = plan_rows(storage, image_set)
    if planned is None and files.empty and not inv.files and not inv.containers and not inv.temp:
        return None
    check = SetCheck(image_set.value, planned, 0, 0)
    check.containers, check.files = len(inv.containers), len(inv.files)
    blobs = BlobReader(storage)
    stored = index_stored(blobs, inv, check)
    not_ok: list[pa.Table] = []
    progress = ContentProgress(on_progress, check.image_set)
    for whole in iter_ledger(storage, image_set, VERIFY_COLUMNS, files=files):
        # Slices (zero-copy) bound the temporaries: an archive set's 16 shards are 1.7M rows in one batch.
        for start in range(0, whole.num_rows, SLICE_ROWS):
            passed = _check_batch(storage, image_set, check, stored, whole.slice(start, SLICE_ROWS), not_ok)
            if not settings.fast:
                check.intact -= check_content(
                    blobs, check, passed, deep=settings.deep, workers=settings.workers, progress=progress
                )
    orphans(check, stored, not_ok, inv)
    blobs.close()
    if settings.requeue:
        check.requeued = requeue(storage, image_set, check.broken_table())
    return check


def _check_batch(
    storage: Storage, image_set: ImageSet, check: SetCheck, stored: Any, batch: pa.Table, not_ok: list[pa.Table]
) -> pa.Table:
    """The cheap checks on one slice; returns the ok rows that passed them (for the content checks)."""
    check.ledger_rows += batch.num_rows
    is_ok = pc.equal(batch["outcome"], Outcome.ok.value)
    ok = batch.filter(is_ok)
    check.ok_rows += ok.num_rows
    if len(stored.keys):  # only orphans need the failed rows (to say why a file is not ok)
        not_ok.append(batch.filter(pc.invert(is_ok)).select(["image_id", "outcome"]))
    passed = check_rows(storage, image_set, check, ok, stored)
    check.intact += passed.num_rows
    return passed


def requeue(storage: Storage, image_set: ImageSet, broken: pa.Table) -> int:
    """Append a `verify_failed` ledger row for every broken row (`SetCheck.broken_table()`); returns how many.

    The new row copies the old one (URL, source, attempts) and is timestamped after it, so it is the
    latest row for that manifest row and `fetch --retry-failed verify_failed` picks it up.
    """
    if broken.num_rows == 0:
        return 0
    # One finding per row: the last one recorded (deep findings come after the shallow ones).
    rows = broken["row"].to_numpy()
    last = np.unique(rows[::-1], return_index=True)[1]
    broken = broken.take(pa.array(len(rows) - 1 - last))
    shards = sorted(set(broken["shard"].to_pylist()))
    ledger = read_ledger(storage, image_set, shards=shards)
    old = ledger.filter(pc.is_in(ledger["row"], value_set=broken["row"]))
    finding = broken.take(pc.index_in(old["row"], value_set=broken["row"]))
    # Timestamped after the row it supersedes, even if that row's clock ran ahead of ours.
    now_ms = int(now_utc().timestamp() * 1000)
    new = [
        prev.rewritten(
            "verify_requeue",
            outcome=Outcome.verify_failed.value,
            reason=None if kind is None or detail is None else f"verify: {kind}: {detail}",
            started_at=_after(prev.started_at, now_ms),
            elapsed_s=0.0,
        )
        for prev, kind, detail in zip(
            map(LedgerRow.from_mapping, old.to_pylist()),
            finding["kind"].cast(pa.string()).to_pylist(),
            finding["detail"].cast(pa.string()).to_pylist(),
            strict=True,
        )
    ]
    for shard in shards:
        append_rows(storage, image_set, shard, [r for r in new if r.shard == shard])
    return len(new)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _after(started_at: datetime | None, now_ms: int) -> datetime:
    """A millisecond after `started_at` (now when it is null), or now if that is later."""
    before = now_ms if started_at is None else (started_at - _EPOCH) // timedelta(milliseconds=1)
    return _EPOCH + timedelta(milliseconds=max(before + 1, now_ms))


def summarize(report: VerifyReport) -> Counter[str]:
    """Problem counts by kind over all sets."""
    total: Counter[str] = Counter()
    for s in report.sets:
        total.update(s.counts)
    return total


__all__ = [
    "BROKEN_KINDS",
    "EXAMPLES_PER_KIND",
    "WARNING_KINDS",
    "Problem",
    "SetCheck",
    "VerifyReport",
    "VerifySettings",
    "requeue",
    "summarize",
    "verify",
    "verify_set",
]
