"""`build_plan`: the two CSVs -> `plan/<set>.parquet` for the four sets, `plan/summary.json` and, when rows
were skipped, `plan/rejected.parquet`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oiv4.contracts.errors import PlanError, UnreliableRead
from oiv4.contracts.layout import BOXABLE_CSV, FULL_CSV, LAYOUT
from oiv4.contracts.schema import MANIFEST_SCHEMA, ImageSet
from oiv4.io.damage import damaged, read_json_object
from oiv4.io.ledger import ledger_started
from oiv4.io.storage import Storage
from oiv4.stages.plan.checks import IdSet, any_too_long, blank_to_null, id_keys, invalid_mask, typed
from oiv4.stages.plan.locate import duplicate_problems, locate_raw_lines, resolve_lines
from oiv4.stages.plan.problems import PlanSettings, PlanSummary, RowProblem, malformed, problem_message
from oiv4.stages.plan.sources import Malformed, check_header, duckdb_batches, exact_batches, pyarrow_batches

#: lz4 rather than zstd: on the full file zstd cost ~5 s more for ~30% smaller manifests (measured);
#: manifests are read often and written once, and lz4 is also the faster to read.
MANIFEST_COMPRESSION = "lz4"
#: Dictionary-encode only the low-cardinality columns: on URLs, IDs and MD5s pyarrow builds a dictionary
#: per page only to abandon it, which was most of the manifest write time.
DICTIONARY_COLUMNS = ["Subset", "License", "Author", "Title", "Rotation"]


def _plan_inputs(storage: Storage) -> dict[str, int]:
    inputs = {}
    for name in (FULL_CSV, BOXABLE_CSV):
        rel = LAYOUT.metadata(name)
        if not storage.exists(rel):
            raise PlanError(f"{storage.path(rel)} is missing: run `oiv4 metadata --root {storage.root}` first")
        inputs[name] = storage.size(rel)
    return inputs


def load_summary(storage: Storage) -> PlanSummary | None:
    """The summary of the existing plan, or None if there is none."""
    rel = LAYOUT.plan_summary()
    if not storage.exists(rel):
        return None
    try:
        return PlanSummary(**read_json_object(storage, rel))
    except TypeError as exc:  # keys missing or unknown: not a summary this version wrote
        raise damaged(storage, rel, "it is not a plan summary") from exc


def build_plan(storage: Storage, settings: PlanSettings | None = None) -> PlanSummary:
    """Write `plan/<set>.parquet` for the four sets and `plan/summary.json`; return the summary.

    Idempotent: an existing plan made from the same inputs and settings is reused, because the
    ledgers of later stages refer to manifest rows and must keep meaning the same images.
    Raises PlanError (with `problems`) for bad metadata; every data record of both CSVs is planned
    or is one of those problems.
    """
    settings = settings or PlanSettings()
    if settings.train_size < 0 or settings.shard_rows <= 0:
        raise PlanError("--train-size must be >= 0 and --shard-rows > 0")
    inputs = _plan_inputs(storage)
    existing = load_summary(storage)
    if existing and not settings.force:
        if (existing.inputs, existing.train_size, existing.shard_rows) == (
            inputs,
            settings.train_size,
            settings.shard_rows,
        ):
            existing.reused = True
            return existing
        if any(ledger_started(storage, s) for s in ImageSet):
            raise PlanError(
                "an existing plan was made from other inputs or settings and later stages have already recorded "
                "work against it; re-plan with --force only if you mean to start those sets over"
            )
    try:
        return _plan(storage, settings, inputs, exact=False)
    except UnreliableRead:
        # A fast reader choked on, or lost, a malformed record: nothing was published (the manifests are
        # written atomically), so plan again reading every record with Python's csv module.
        return _plan(storage, settings, inputs, exact=True)


# Kept long: one ExitStack holds both CSV handles and the four manifest writers, so leaving it renames every
# manifest into place or, on an error, none; both passes (boxable file, then full file) must run inside it.
def _plan(storage: Storage, settings: PlanSettings, inputs: dict[str, int], exact: bool) -> PlanSummary:
    problems: list[RowProblem] = []
    with ExitStack() as stack:
        box_fh = stack.enter_context(storage.open(LAYOUT.metadata(BOXABLE_CSV)))
        full_fh = stack.enter_context(storage.open(LAYOUT.metadata(FULL_CSV)))
        check_header(box_fh, BOXABLE_CSV)
        check_header(full_fh, FULL_CSV)

        handles = {s: stack.enter_context(storage.open_atomic(LAYOUT.plan(s))) for s in ImageSet}
        writers = {
            s: stack.enter_context(
                pq.ParquetWriter(
                    handles[s], MANIFEST_SCHEMA, compression=MANIFEST_COMPRESSION, use_dictionary=DICTIONARY_COLUMNS
                )
            )
            for s in ImageSet
        }
        counts = {s: 0 for s in ImageSet}
        planned_ids: list[pa.Array] = []

        def write(s: ImageSet, batch: pa.RecordBatch) -> None:
            if batch.num_rows:
                planned_ids.append(batch["ImageID"])
                writers[s].write_table(typed(batch, counts[s]))
                counts[s] += batch.num_rows

        # 1. the boxable file: the targets set, and the IDs that exclude rows from train.
        box_ids: list[pa.Array] = []
        for batch in _validated(BOXABLE_CSV, box_fh, problems, exact):
            not_train = pc.not_equal(batch["Subset"], "train")
            if pc.any(not_train).as_py():
                _record(problems, BOXABLE_CSV, batch, not_train, "boxable row whose Subset is not train")
                batch = batch.filter(pc.invert(not_train))
            box_ids.append(batch["ImageID"])
            write(ImageSet.targets, batch)
        box_keys = IdSet(id_keys(pa.chunked_array(box_ids, pa.string())))

        # 2. the full file, in file order: validation, and the train candidates split at train_size.
        subset_counts = {"train": 0, "validation": 0, "test": 0}
        candidates = 0
        for batch in _validated(FULL_CSV, full_fh, problems, exact):
            subset = batch["Subset"]
            for k in subset_counts:
                subset_counts[k] += pc.sum(pc.equal(subset, k)).as_py() or 0
            write(ImageSet.validation, batch.filter(pc.equal(subset, "validation")))
            boxable = pa.array(box_keys.contains(id_keys(batch["ImageID"])))
            cand = batch.filter(pc.and_(pc.equal(subset, "train"), pc.invert(boxable)))
            take = max(0, min(cand.num_rows, settings.train_size - candidates))
            write(ImageSet.train, cand.slice(0, take))
            write(ImageSet.extended_targets, cand.slice(take))
            candidates += cand.num_rows

        if not resolve_lines(storage, problems) and not exact:
            raise UnreliableRead("the fast reader's records differ from the exact reader's")
        duplicates = duplicate_problems(storage, planned_ids)
        if duplicates:
            raise PlanError(problem_message(problems + duplicates, skippable=False), problems + duplicates)
        if problems and not settings.skip_invalid:
            raise PlanError(problem_message(problems), problems)
        # Leaving the ExitStack closes writers, then renames every manifest into place.

    rejected = len(problems)
    if rejected:
        _write_rejected(storage, problems)
    summary = PlanSummary(
        counts={s.value: counts[s] for s in ImageSet},
        train_size=settings.train_size,
        shard_rows=settings.shard_rows,
        inputs=inputs,
        rejected=rejected,
        candidates=candidates,
        subset_counts=subset_counts,
    )
    storage.write_bytes(LAYOUT.plan_summary(), summary.to_json().encode(), fsync=True)
    return summary


def _validated(file_name: str, fh: IO[bytes], problems: list[RowProblem], exact: bool) -> Iterator[pa.RecordBatch]:
    """The valid rows of one CSV as batches; every other record is added to `problems` as it passes."""
    bad_rows: list[str] = []
    lines: list[Malformed] = []
    local_path = getattr(fh, "name", None)
    if exact:
        reader = exact_batches(fh, lines)
    elif isinstance(local_path, str) and Path(local_path).is_file():
        reader = duckdb_batches(Path(local_path), lines)
    else:  # remote roots: pyarrow reads any file object
        reader = pyarrow_batches(fh, bad_rows)
    record = 0
    for raw in reader:
        if not exact and any_too_long(raw):
            # The exact reader rejects such records (its csv module cannot read every one of them):
            # let it, so every reader's well-formed records are the same.
            raise UnreliableRead(f"{file_name}: a record longer than the limit")
        batch = blank_to_null(raw)
        mask, checks = invalid_mask(batch)
        if pc.any(mask).as_py():
            for reason, m in checks:
                if pc.any(m).as_py():
                    _record(problems, file_name, batch, m, reason, record)
            batch = batch.filter(pc.invert(mask))
        record += raw.num_rows
        yield batch
    for line, text, why in lines:
        problems.append(malformed(file_name, line, text, why))
    if bad_rows:
        # Rows pyarrow could not split into 12 fields: found again by text for their line numbers.
        for text, line in zip(bad_rows, locate_raw_lines(fh, bad_rows), strict=True):
            problems.append(malformed(file_name, line, text))


def _record(
    problems: list[RowProblem], file_name: str, batch: pa.RecordBatch, mask: pa.Array, reason: str, start: int = -1
) -> None:
    """Add a problem for each row of `batch` where `mask` is true; `start` is the batch's first record index."""
    idx = pc.indices_nonzero(mask).to_pylist()
    ids = batch["ImageID"].take(pa.array(idx, pa.uint64())).to_pylist()
    for i, image_id in zip(idx, ids, strict=True):
        problems.append(RowProblem(file_name, -1, start + i if start >= 0 else -1, image_id or "", reason))


def _write_rejected(storage: Storage, problems: list[RowProblem]) -> None:
    table = pa.Table.from_pylist([asdict(p) for p in problems])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(LAYOUT.plan_rejected(), sink.getvalue().to_pybytes())
