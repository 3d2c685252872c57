"""Files under a root that cannot be read back: which file, what is wrong with it, what to do.

A disk error or a bad copy leaves a ledger shard, a ledger part, a plan manifest, the plan summary or a
settings record truncated, empty or full of garbage. The readers of those files (`oiv4.io.ledger`,
`oiv4.io.sql`, `oiv4.io.manifest`, `oiv4.run.shard_settings`) read them through `reading`, which turns
what pyarrow, DuckDB or json raise into one `DamagedFileError` naming the file and the safe way out for its
kind. DuckDB scans many files at once and names none reliably; `first_damaged` then checks their footers
(only after a failure, so the happy path costs nothing). Nothing here writes, moves or deletes a file.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from oiv4.contracts.errors import DamagedFileError
from oiv4.contracts.layout import LAYOUT, LEDGER_PART_FILE, LEDGER_SETTINGS_FILE, LEDGER_SHARD_FILE
from oiv4.io.storage import Storage

_PARQUET_MAGIC = b"PAR1"
_ARCHIVE_SETS = ("targets", "validation")


def _redo(image_set: str, root: str) -> str:
    if image_set in _ARCHIVE_SETS:
        return (
            f"`oiv4 archives {image_set} --root {root}`: its archive is downloaded and converted again "
            f"(then `oiv4 hash --root {root}` for its perceptual hashes)"
        )
    return (
        f"`oiv4 fetch {image_set} --root {root}`: its rows are redone (in the folder layout, images already "
        "stored are checked and recorded again, not downloaded again)"
    )


def advice(storage: Storage, rel: str) -> str:
    """What to do about a damaged file, by its kind; every way out named here loses no finished image."""
    root = storage.root
    if m := LEDGER_SHARD_FILE.match(rel):
        return f"Restore it from a copy, or delete it and run {_redo(m['set'], root)}"
    if m := LEDGER_PART_FILE.match(rel):
        return f"Restore it from a copy, or delete it and run {_redo(m['set'], root)}"
    if LEDGER_SETTINGS_FILE.match(rel):
        return (
            "Restore it from a copy, or delete it: it only guards a resume of that shard against other output "
            "settings, and the shard's next run records it again"
        )
    if rel.startswith(f"{LAYOUT.plan_dir()}/"):
        return (
            f"Restore it from a copy, or recompute the plan: `oiv4 plan --root {root} --force` with the "
            "--train-size and --shard-rows it was made with (the same metadata gives the same rows)"
        )
    if rel.startswith(f"{LAYOUT.dedup_dir()}/"):
        return f"Delete it and run `oiv4 dedup --root {root}` again"
    return "Restore it from a copy"


def damaged(storage: Storage, rel: str, problem: str) -> DamagedFileError:
    """The one error for a damaged file under `storage`: its path, `problem` and the advice for its kind."""
    return DamagedFileError(storage.path(rel), problem.rstrip("."), advice(storage, rel))


def is_read_error(exc: BaseException) -> bool:
    """Does `exc` say a file's bytes are not what its reader expects (rather than a bug or a missing file)?"""
    if isinstance(exc, FileNotFoundError | PermissionError | ConnectionError | TimeoutError | InterruptedError):
        return False  # missing, forbidden, or the network: nothing a file's bytes explain
    if isinstance(exc, OSError | UnicodeDecodeError | json.JSONDecodeError):
        return True
    module = type(exc).__module__ or ""
    if module.startswith("pyarrow"):
        return True
    return module.startswith(("duckdb", "_duckdb")) and type(exc).__name__ in {
        "Error",  # a corrupt page inside a file ("TProtocolException: Invalid data") arrives as the base class
        "InvalidInputException",
        "IOException",
        "ConversionException",
        "SerializationException",
    }


def describe(exc: BaseException) -> str:
    """A library's error as one short phrase, without the file name it may repeat."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"^(Invalid Input|IO) Error: ", "", text)
    if isinstance(exc, IsADirectoryError):
        return "it is a folder, not a file"
    if isinstance(exc, UnicodeDecodeError):
        return f"it is not text (byte {exc.start} is not UTF-8)"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    return text[:200]


@contextlib.contextmanager
def reading(storage: Storage, rel: str) -> Iterator[None]:
    """Read `rel` inside this block: a read error becomes `DamagedFileError` naming it; FileNotFoundError stays."""
    try:
        yield
    except DamagedFileError:
        raise
    except Exception as exc:
        if not is_read_error(exc):
            raise
        footer = parquet_problem(storage, rel) if rel.endswith(".parquet") else None
        raise damaged(storage, rel, footer or describe(exc)) from exc


def read_json_object(storage: Storage, rel: str) -> dict[str, Any]:
    """A JSON object oiv4 wrote (plan summary, settings record); anything else is a damaged file."""
    with reading(storage, rel):
        raw = storage.read_bytes(rel)
        if not raw:
            raise damaged(storage, rel, "it is empty")
        doc = json.loads(raw.decode("utf-8"))
    if not isinstance(doc, dict):
        raise damaged(storage, rel, f"it holds a JSON {type(doc).__name__}, not an object")
    return doc


def parquet_problem(storage: Storage, rel: str, *, deep: bool = False) -> str | None:
    """What is wrong with the Parquet file `rel` judged by its footer (None: it looks whole).

    Cheap: the file's size and its last 8 bytes, then the footer it points at is parsed by pyarrow.
    `deep` also reads every page, which finds damage inside a file whose footer is intact.
    """
    import pyarrow.parquet as pq

    try:
        size = storage.size(rel)
        if size == 0:
            return "it is empty"
        if size < 12:
            return f"{size} bytes is too small for a Parquet file"
        with storage.open(rel) as fh:
            fh.seek(size - 8)
            tail = fh.read(8)
            if tail[4:] != _PARQUET_MAGIC:
                return "it is not Parquet or was cut short (no Parquet footer at its end)"
            footer = int.from_bytes(tail[:4], "little")
            if footer + 12 > size:
                return "it was cut short (its footer points before its start)"
            fh.seek(0)
            parquet = pq.ParquetFile(fh)  # parsing the footer is the check
            if deep:
                parquet.read()
    except FileNotFoundError:
        return None
    except Exception as exc:
        if not is_read_error(exc):
            raise
        return describe(exc)
    return None


def first_damaged(storage: Storage, rels: Iterable[str], *, deep: bool = False) -> DamagedFileError | None:
    """The first of the Parquet files `rels` found damaged (see `parquet_problem`), as the error to raise."""
    for rel in rels:
        problem = parquet_problem(storage, rel, deep=deep)
        if problem is not None:
            return damaged(storage, rel, problem)
    return None


def named_in(storage: Storage, exc: BaseException, rels: Iterable[str]) -> str | None:
    """The one of `rels` that a library's error message names, if any."""
    text = str(exc)
    for rel in rels:
        if storage.path(rel) in text:
            return rel
    return None


def damaged_among(storage: Storage, rels: Sequence[str], exc: BaseException) -> DamagedFileError | None:
    """After DuckDB failed over the files `rels`: the damaged one as the error to raise (None: none is).

    The file DuckDB's message names if it names one, else the first whose footer is damaged.
    """
    named = named_in(storage, exc, rels)
    if named is not None and is_read_error(exc):
        return damaged(storage, named, parquet_problem(storage, named) or describe(exc))
    return first_damaged(storage, rels)


def find_damage_in_root(storage: Storage) -> DamagedFileError | None:
    """The first damaged file oiv4 wrote under the root (summaries, plans, ledgers, settings records, dedup).

    Run only after a read failed without naming its file: it checks every ledger file's footer, then, if
    they all look whole, reads every page of every file (a corrupt page inside a file with an intact footer).
    """
    from oiv4.contracts.schema import ImageSet

    jsons = [LAYOUT.plan_summary(), LAYOUT.dedup_summary()]
    parquets = [LAYOUT.plan(s) for s in ImageSet] + [LAYOUT.dedup_pairs()]
    for s in ImageSet:
        d = LAYOUT.ledger_dir(s)
        parquets += storage.glob(LAYOUT.shard_files_glob(d)) + storage.glob(LAYOUT.part_files_glob(d))
        jsons += storage.glob(LAYOUT.settings_files_glob(d))
    for rel in jsons:
        if storage.exists(rel):
            try:
                read_json_object(storage, rel)
            except DamagedFileError as exc:
                return exc
    present = [rel for rel in parquets if storage.exists(rel)]
    return first_damaged(storage, present) or first_damaged(storage, present, deep=True)
