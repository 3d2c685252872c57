"""Stage 2: compute the four sets exactly as the seed notebook does, as Parquet manifests.

    targets          = the boxable file's rows (CVDF archives)
    validation       = full-file rows with Subset == validation (CVDF archive)
    train            = full-file rows with Subset == train and ImageID not boxable, in FILE order,
                       the first `train_size` (default 1,200,000)
    extended_targets = the rest of those candidates

The full file is 3.1 GB / 9.2M rows, so it is streamed through pyarrow's multi-threaded CSV reader
in record batches and never held whole in memory (the pandas notebook needs ~10 GB and minutes;
see benchmarks/plan_scale.py). Every row is validated with vectorised checks; the rare bad row is
then located with the `csv` module so the error can name its physical line number.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from oiv4.contracts.layout import BOXABLE_CSV, FULL_CSV, LAYOUT
from oiv4.contracts.schema import COLUMNS, MANIFEST_SCHEMA, ImageSet
from oiv4.contracts.shards import DEFAULT_SHARD_ROWS
from oiv4.io.storage import Storage

DEFAULT_TRAIN_SIZE = 1_200_000
BLOCK_SIZE = 16 << 20  # 16 MiB CSV blocks: ~50k rows a batch, fast and a flat memory profile
MAX_REPORTED_ERRORS = 50
#: lz4 rather than zstd: on the full file zstd cost ~5 s more for ~30% smaller manifests (measured);
#: manifests are read often and written once, and lz4 is also the faster to read.
MANIFEST_COMPRESSION = "lz4"
#: Dictionary-encode only the low-cardinality columns: on URLs, IDs and MD5s pyarrow builds a dictionary
#: per page only to abandon it, which was most of the manifest write time.
DICTIONARY_COLUMNS = ["Subset", "License", "Author", "Title", "Rotation"]

#: Manifest schema: the 12 CSV columns (typed where a stage computes with them) plus `row`.

_ROTATIONS = ["0", "0.0", "90", "90.0", "180", "180.0", "270", "270.0"]


class PlanError(RuntimeError):
    """The metadata cannot be planned; `problems` lists (file, line, reason) for each bad row."""

    def __init__(self, message: str, problems: list[RowProblem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass(frozen=True)
class RowProblem:
    file: str
    line: int  # physical line number in the CSV (the header is line 1)
    record: int  # 0-based data record index
    image_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason} (ImageID {self.image_id!r})"


@dataclass(frozen=True)
class PlanSettings:
    train_size: int = DEFAULT_TRAIN_SIZE
    shard_rows: int = DEFAULT_SHARD_ROWS
    skip_invalid: bool = False  # drop bad rows (recorded in plan/rejected.parquet) instead of failing
    force: bool = False  # re-plan even if an up-to-date plan exists


@dataclass
class PlanSummary:
    counts: dict[str, int]
    train_size: int
    shard_rows: int
    inputs: dict[str, int]  # file name -> size in bytes, to know when a plan is stale
    rejected: int = 0
    candidates: int = 0
    subset_counts: dict[str, int] = field(default_factory=dict)
    reused: bool = False

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("reused")
        return json.dumps(d, indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# reading and validating


def _reader(fh: IO[bytes], file_name: str, bad_rows: list[str]) -> pacsv.CSVStreamingReader:
    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row.text)
        return "skip"  # collected here, reported (with its line number) after the pass

    return pacsv.open_csv(
        fh,
        read_options=pacsv.ReadOptions(block_size=BLOCK_SIZE, use_threads=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in COLUMNS},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            include_columns=list(COLUMNS),
        ),
    )


def _duckdb_reader(path: Path, malformed: list[tuple[int, str]]) -> Iterator[pa.RecordBatch]:
    """Record batches of a local CSV, in file order, read by DuckDB.

    Measured on the full-size file (9.18M rows, 3.4 GB, 2 cores): DuckDB 5.7 s vs pyarrow.csv 12.2 s
    to Arrow batches. Malformed lines are skipped by DuckDB and collected with their line numbers
    from its rejects table once the scan is done.
    """
    import duckdb

    con = duckdb.connect(
        config={
            "threads": max(1, os.cpu_count() or 1),
            "preserve_insertion_order": True,
        }
    )
    con.execute("SET enable_progress_bar = false")  # our CLI draws its own output
    columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in COLUMNS) + "}"
    rel = con.sql(
        f"SELECT * FROM read_csv(?, header = true, columns = {columns}, quote = '\"', escape = '\"', "
        "delim = ',', auto_detect = false, strict_mode = true, store_rejects = true, "
        "null_padding = false, parallel = true)",
        params=[str(path)],
    )
    reader = rel.to_arrow_reader(1 << 16) if hasattr(rel, "to_arrow_reader") else rel.fetch_arrow_reader(1 << 16)
    yield from reader
    rejects = con.execute(
        "SELECT DISTINCT line_byte_position, csv_line FROM reject_errors ORDER BY line_byte_position"
    ).fetchall()
    con.close()
    if rejects:
        # DuckDB's `line` counts records, not physical lines (titles may hold newlines): count them ourselves.
        with open(path, "rb") as fh:
            pos, line = 0, 1
            for offset, text in rejects:
                line += fh.read(int(offset) - pos).count(b"\n")
                pos = int(offset)
                malformed.append((line, text or ""))


def _check_header(fh: IO[bytes], file_name: str) -> None:
    first = fh.read(1 << 16).split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").strip()
    fh.seek(0)
    got = tuple(c.strip().strip('"') for c in first.split(","))
    if got != COLUMNS:
        raise PlanError(f"{file_name}: unexpected header.\n  expected: {','.join(COLUMNS)}\n  found:    {first[:300]}")


def _blank_to_null(batch: pa.RecordBatch) -> pa.RecordBatch:
    """An empty Rotation/OriginalSize, quoted or not, means "unknown"."""
    cols = []
    for name in batch.schema.names:
        col = batch[name]
        if name in ("Rotation", "OriginalSize"):
            col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def _fixed_charset_bad(arr: pa.Array, width: int, allowed: np.ndarray, suffix: bytes = b"") -> pa.Array:
    """True where `arr` is null, not exactly `width` bytes, or has a byte outside `allowed` / wrong suffix.

    Vectorised over Arrow's data buffer with numpy: the regex kernels this replaces took ~13 s per pass
    over the full file; this takes well under one.
    """
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    n = len(arr)
    valid = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), bool)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + n + 1]
    lengths = np.diff(offsets)
    ok = valid & (lengths == width)
    rows = np.flatnonzero(ok)
    if rows.size:
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
        idx = offsets[rows][:, None] + np.arange(width)
        chars = data[idx]
        body = chars[:, : width - len(suffix)] if suffix else chars
        good = allowed[body].all(axis=1)
        if suffix:
            good &= (chars[:, width - len(suffix) :] == np.frombuffer(suffix, np.uint8)).all(axis=1)
        ok[rows] = good
    return pa.array(~ok)


def _charset(chars: bytes) -> np.ndarray:
    table = np.zeros(256, bool)
    table[np.frombuffer(chars, np.uint8)] = True
    return table


_HEX_CHARS = _charset(b"0123456789abcdef")
_B64_CHARS = _charset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _invalid_mask(batch: pa.RecordBatch) -> tuple[pa.Array, list[tuple[str, pa.Array]]]:
    """Vectorised row checks; returns (any-problem mask, [(reason, mask), ...])."""
    url = batch["OriginalURL"]
    url_ok = pc.fill_null(pc.or_(pc.starts_with(url, "https://"), pc.starts_with(url, "http://")), False)
    size = batch["OriginalSize"]
    checks = [
        ("ImageID is not 16 lowercase hex characters", _fixed_charset_bad(batch["ImageID"], 16, _HEX_CHARS)),
        (
            "Subset is not train, validation or test",
            pc.invert(pc.fill_null(pc.is_in(batch["Subset"], pa.array(["train", "validation", "test"])), False)),
        ),
        ("OriginalURL is missing or not http(s)", pc.invert(url_ok)),
        (
            "OriginalMD5 is missing or not base64 of 16 bytes",
            _fixed_charset_bad(batch["OriginalMD5"], 24, _B64_CHARS, suffix=b"=="),
        ),
        (
            "OriginalSize is not a whole number",
            pc.and_(pc.is_valid(size), pc.invert(pc.fill_null(pc.utf8_is_digit(size), False))),
        ),
        (
            "Rotation is not 0, 90, 180 or 270",
            pc.and_(pc.is_valid(batch["Rotation"]), pc.invert(pc.is_in(batch["Rotation"], pa.array(_ROTATIONS)))),
        ),
    ]
    mask = checks[0][1]
    for _, m in checks[1:]:
        mask = pc.or_(mask, m)
    return mask, checks


def _typed(batch: pa.RecordBatch, first_row: int) -> pa.Table:
    cols = []
    for f in MANIFEST_SCHEMA:
        if f.name == "row":
            cols.append(pa.array(range(first_row, first_row + batch.num_rows), pa.int64()))
        elif f.name == "OriginalSize":
            cols.append(pc.cast(batch[f.name], pa.int64()))
        elif f.name == "Rotation":
            cols.append(pc.cast(batch[f.name], pa.float64()))
        else:
            cols.append(batch[f.name])
    return pa.Table.from_arrays(cols, schema=MANIFEST_SCHEMA)


def _locate_records(fh: IO[bytes], wanted: set[int]) -> dict[int, int]:
    """Map 0-based data record indexes to physical line numbers (slow path, errors only)."""
    fh.seek(0)
    text = io.TextIOWrapper(fh, encoding="utf-8", errors="replace", newline="")
    reader = csv.reader(text)
    next(reader, None)
    found: dict[int, int] = {}
    last = max(wanted)
    first_line = reader.line_num + 1  # a quoted field may span lines: report where the record starts
    rec = 0
    for fields in reader:
        # Only well-formed records are counted, as the fast readers skip malformed ones.
        if len(fields) == len(COLUMNS):
            if rec in wanted:
                found[rec] = first_line
            if rec >= last:
                break
            rec += 1
        first_line = reader.line_num + 1
    text.detach()
    return found


def _locate_raw_lines(fh: IO[bytes], texts: list[str]) -> list[int]:
    """Line numbers of unparseable rows, found by their text (slow path, errors only)."""
    fh.seek(0)
    want = {t.strip(): i for i, t in enumerate(texts)}
    lines = [0] * len(texts)
    for n, raw in enumerate(fh, start=1):
        key = raw.decode("utf-8", errors="replace").strip()
        if key in want:
            lines[want.pop(key)] = n
            if not want:
                break
    return lines


_NIBBLE = np.zeros(256, np.uint64)
_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint64)


def _id_keys(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Validated 16-hex ImageIDs -> uint64, for set membership and duplicate checks.

    `pc.is_in` rebuilds its hash table on every call, which made the 1.74M-ID exclusion cost ~100 s
    over the full file's batches; sorted uint64 keys + searchsorted is a few hundred ms in total.
    """
    if isinstance(ids, pa.ChunkedArray):
        parts = [_id_keys(c) for c in ids.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.uint64)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset : ids.offset + n + 1]
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    nibbles = _NIBBLE[data.reshape(n, 16)]
    keys = np.zeros(n, np.uint64)
    for i in range(16):
        keys = (keys << np.uint64(4)) | nibbles[:, i]
    return keys


class _IdSet:
    """Membership of uint64 ImageID keys: a 2^24-bucket bitmap on the top bits rejects most keys at once
    (IDs are uniformly random hex), and only the rest are confirmed by binary search."""

    def __init__(self, keys: np.ndarray) -> None:
        self.sorted = np.sort(keys)
        self.buckets = np.zeros(1 << 24, bool)
        self.buckets[keys >> np.uint64(40)] = True

    def contains(self, keys: np.ndarray) -> np.ndarray:
        out = self.buckets[keys >> np.uint64(40)]
        maybe = np.flatnonzero(out)
        if maybe.size:
            sub = keys[maybe]
            pos = np.searchsorted(self.sorted, sub).clip(max=len(self.sorted) - 1)
            out[maybe] = self.sorted[pos] == sub
        return out


# ---------------------------------------------------------------------------------------------
# planning


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
    return PlanSummary(**json.loads(storage.read_bytes(rel)))


def build_plan(storage: Storage, settings: PlanSettings | None = None) -> PlanSummary:
    """Write `plan/<set>.parquet` for the four sets and `plan/summary.json`; return the summary.

    Idempotent: an existing plan made from the same inputs and settings is reused, because the
    ledgers of later stages refer to manifest rows and must keep meaning the same images.
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
        if storage.glob("ledger/*/shard-*"):
            raise PlanError(
                "an existing plan was made from other inputs or settings and later stages have already recorded "
                "work against it; re-plan with --force only if you mean to start those sets over"
            )

    problems: list[RowProblem] = []
    rejected_rows: list[pa.Table] = []

    with ExitStack() as stack:
        box_fh = stack.enter_context(storage.open(LAYOUT.metadata(BOXABLE_CSV)))
        full_fh = stack.enter_context(storage.open(LAYOUT.metadata(FULL_CSV)))
        _check_header(box_fh, BOXABLE_CSV)
        _check_header(full_fh, FULL_CSV)

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
                writers[s].write_table(_typed(batch, counts[s]))
                counts[s] += batch.num_rows

        # 1. the boxable file: the targets set, and the IDs that exclude rows from train.
        box_ids: list[pa.Array] = []
        for file_name, _fh, batches in _validated(BOXABLE_CSV, box_fh, problems, rejected_rows):
            for batch in batches:
                not_train = pc.not_equal(batch["Subset"], "train")
                if pc.any(not_train).as_py():
                    _record(
                        problems, rejected_rows, file_name, batch, not_train, "boxable row whose Subset is not train"
                    )
                    batch = batch.filter(pc.invert(not_train))
                box_ids.append(batch["ImageID"])
                write(ImageSet.targets, batch)
        box_keys = _IdSet(_id_keys(pa.chunked_array(box_ids, pa.string())))

        # 2. the full file, in file order: validation, and the train candidates split at train_size.
        subset_counts = {"train": 0, "validation": 0, "test": 0}
        candidates = 0
        for _file_name, _fh, batches in _validated(FULL_CSV, full_fh, problems, rejected_rows):
            for batch in batches:
                subset = batch["Subset"]
                for k in subset_counts:
                    subset_counts[k] += pc.sum(pc.equal(subset, k)).as_py() or 0
                write(ImageSet.validation, batch.filter(pc.equal(subset, "validation")))
                boxable = pa.array(box_keys.contains(_id_keys(batch["ImageID"])))
                cand = batch.filter(pc.and_(pc.equal(subset, "train"), pc.invert(boxable)))
                take = max(0, min(cand.num_rows, settings.train_size - candidates))
                write(ImageSet.train, cand.slice(0, take))
                write(ImageSet.extended_targets, cand.slice(take))
                candidates += cand.num_rows

        _resolve_lines(storage, problems)
        duplicates = _duplicate_problems(storage, planned_ids)
        if duplicates:
            raise PlanError(_problem_message(problems + duplicates, skippable=False), problems + duplicates)
        if problems and not settings.skip_invalid:
            raise PlanError(_problem_message(problems), problems)
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


def _validated(
    file_name: str, fh: IO[bytes], problems: list[RowProblem], rejected: list[pa.Table]
) -> Iterator[tuple[str, IO[bytes], Iterator[pa.RecordBatch]]]:
    """Yield one iterator of valid batches; invalid rows are recorded in `problems` as they pass."""
    bad_rows: list[str] = []
    malformed: list[tuple[int, str]] = []
    local_path = getattr(fh, "name", None)
    if isinstance(local_path, str) and Path(local_path).is_file():
        reader = _duckdb_reader(Path(local_path), malformed)
    else:  # remote roots: pyarrow reads any file object
        reader = _reader(fh, file_name, bad_rows)
    state = {"record": 0}

    def batches() -> Iterator[pa.RecordBatch]:
        for raw in reader:
            batch = _blank_to_null(raw)
            start = state["record"]
            state["record"] += batch.num_rows
            mask, checks = _invalid_mask(batch)
            if pc.any(mask).as_py():
                for reason, m in checks:
                    if pc.any(m).as_py():
                        _record(problems, rejected, file_name, batch, m, reason, start)
                batch = batch.filter(pc.invert(mask))
            yield batch

    yield file_name, fh, batches()
    for line, text in malformed:
        problems.append(
            RowProblem(
                file_name, line, -1, text.split(",", 1)[0][:40], f"malformed line (not 12 fields): {text[:120]!r}"
            )
        )
    if bad_rows:
        # Rows pyarrow could not split into 12 fields: found again by text for their line numbers.
        lines = _locate_raw_lines(fh, bad_rows)
        for text, line in zip(bad_rows, lines, strict=True):
            problems.append(
                RowProblem(
                    file_name, line, -1, text.split(",", 1)[0][:40], f"malformed line (not 12 fields): {text[:120]!r}"
                )
            )


def _record(
    problems: list[RowProblem],
    rejected: list[pa.Table],
    file_name: str,
    batch: pa.RecordBatch,
    mask: pa.Array,
    reason: str,
    start: int = -1,
) -> None:
    idx = pc.indices_nonzero(mask).to_pylist()
    ids = batch["ImageID"].take(pa.array(idx)).to_pylist()
    for i, image_id in zip(idx, ids, strict=True):
        rec = start + i if start >= 0 else -1
        problems.append(RowProblem(file_name, -1, rec, image_id or "", reason))


def _resolve_lines(storage: Storage, problems: list[RowProblem]) -> None:
    by_file: dict[str, set[int]] = {}
    for p in problems:
        if p.line < 0 and p.record >= 0:
            by_file.setdefault(p.file, set()).add(p.record)
    for file_name, records in by_file.items():
        with storage.open(LAYOUT.metadata(file_name)) as fh:
            lines = _locate_records(fh, records)
        for i, p in enumerate(problems):
            if p.file == file_name and p.line < 0 and p.record in lines:
                problems[i] = RowProblem(p.file, lines[p.record], p.record, p.image_id, p.reason)


def _duplicate_problems(storage: Storage, ids: list[pa.Array]) -> list[RowProblem]:
    """An ImageID in two planned rows would make two rows fight over one file: always an error."""
    if not ids:
        return []
    keys = np.sort(np.concatenate([_id_keys(a) for a in ids]))
    dup_keys = np.unique(keys[1:][keys[1:] == keys[:-1]])
    if len(dup_keys) == 0:
        return []
    dup = [f"{int(k):016x}" for k in dup_keys]
    problems = []
    for file_name in (BOXABLE_CSV, FULL_CSV):
        with storage.open(LAYOUT.metadata(file_name)) as fh:
            for image_id, line in _locate_ids(fh, set(dup)):
                problems.append(RowProblem(file_name, line, -1, image_id, "duplicate ImageID (planned more than once)"))
    return problems


def _locate_ids(fh: IO[bytes], wanted: set[str]) -> Iterator[tuple[str, int]]:
    """(ImageID, line) for every record whose ImageID is in `wanted` (slow path, errors only)."""
    text = io.TextIOWrapper(fh, encoding="utf-8", errors="replace", newline="")
    reader = csv.reader(text)
    next(reader, None)
    first_line = reader.line_num + 1
    for rec in reader:
        if rec and rec[0] in wanted:
            yield rec[0], first_line
        first_line = reader.line_num + 1
    text.detach()


def _problem_message(problems: list[RowProblem], skippable: bool = True) -> str:
    head = "\n".join(f"  {p}" for p in sorted(problems, key=lambda p: (p.file, p.line))[:MAX_REPORTED_ERRORS])
    more = len(problems) - MAX_REPORTED_ERRORS
    tail = f"\n  ... and {more:,} more" if more > 0 else ""
    return f"{len(problems):,} invalid metadata row(s); nothing was planned:\n{head}{tail}\n" + (
        "Fix the file, or re-run with --skip-invalid to plan without them (they are listed in plan/rejected.parquet)."
        if skippable
        else "Duplicate ImageIDs cannot be skipped (which row is right is unknowable): fix the file."
    )


def _write_rejected(storage: Storage, problems: list[RowProblem]) -> None:
    table = pa.Table.from_pylist([asdict(p) for p in problems])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes("plan/rejected.parquet", sink.getvalue().to_pybytes())


