"""Slow paths, run only when something is wrong: the line numbers of bad records and of duplicate IDs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import numpy as np
import pyarrow as pa

from oiv4.contracts.layout import BOXABLE_CSV, FULL_CSV, LAYOUT
from oiv4.io.storage import Storage
from oiv4.stages.plan.checks import id_keys
from oiv4.stages.plan.problems import RowProblem
from oiv4.stages.plan.sources import exact_records


def locate_records(fh: IO[bytes], wanted: set[int]) -> dict[int, tuple[int, str]]:
    """Map 0-based indexes among the well-formed data records to (the line where it starts, its ImageID).

    Only well-formed records are counted, as every reader hands on only those (the rest are reported
    as malformed lines with their own line numbers).
    """
    found: dict[int, tuple[int, str]] = {}
    last = max(wanted)
    rec = 0
    for line, fields, _ in exact_records(fh):
        if fields is None:
            continue
        if rec in wanted:
            found[rec] = (line, fields[0])
        if rec >= last:
            break
        rec += 1
    return found


def locate_raw_lines(fh: IO[bytes], texts: list[str]) -> list[int]:
    """Line numbers of unparseable rows, found by their text (0 where not found)."""
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


def resolve_lines(storage: Storage, problems: list[RowProblem]) -> bool:
    """Fill in the line of every problem known only by its record index.

    False if a record is missing or has another ImageID: the reader that numbered the records split the
    file differently from the exact reader (DuckDB reads `a,...,0.0,` as 12 fields, csv as 13).
    """
    agree = True
    by_file: dict[str, set[int]] = {}
    for p in problems:
        if p.line < 0 and p.record >= 0:
            by_file.setdefault(p.file, set()).add(p.record)
    for file_name, records in by_file.items():
        with storage.open(LAYOUT.metadata(file_name)) as fh:
            lines = locate_records(fh, records)
        for i, p in enumerate(problems):
            if p.file == file_name and p.line < 0 and p.record >= 0:
                line, image_id = lines.get(p.record, (-1, None))
                agree &= image_id == p.image_id
                problems[i] = RowProblem(p.file, line, p.record, p.image_id, p.reason)
    return agree


def duplicate_problems(storage: Storage, ids: list[pa.Array]) -> list[RowProblem]:
    """An ImageID in two planned rows would make two rows fight over one file: always an error."""
    if not ids:
        return []
    keys = np.sort(np.concatenate([id_keys(a) for a in ids]))
    dup_keys = np.unique(keys[1:][keys[1:] == keys[:-1]])
    if len(dup_keys) == 0:
        return []
    dup = {f"{int(k):016x}" for k in dup_keys}
    problems = []
    for file_name in (BOXABLE_CSV, FULL_CSV):
        with storage.open(LAYOUT.metadata(file_name)) as fh:
            for image_id, line in locate_ids(fh, dup):
                problems.append(RowProblem(file_name, line, -1, image_id, "duplicate ImageID (planned more than once)"))
    return problems


def locate_ids(fh: IO[bytes], wanted: set[str]) -> Iterator[tuple[str, int]]:
    """(ImageID, line) for every well-formed record whose ImageID is in `wanted`."""
    for line, fields, _ in exact_records(fh):
        if fields is not None and fields[0] in wanted:
            yield fields[0], line
