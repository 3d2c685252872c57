"""Trust what is on disk: check every `ok` ledger row against the stored bytes, and every stored file against the ledger.

Checks, per set:
- every `ok` row's location exists (file, archive, archive member)            -> `missing`
- its stored size equals the ledger's `stored_bytes`                          -> `size_mismatch`
- every zip's central directory / tar's headers parse and are consistent     -> `bad_archive`
- deep only: every member's CRC-32 matches (zipfile.testzip's check) and
  every image decodes fully with Pillow                                       -> `damaged`, `undecodable`
- files and archive members no `ok` row points at                            -> `orphan` (warning)
- temp files a killed writer left behind                                     -> `stray_temp` (warning)
- images still staged because their shard's archive is not packed yet         -> `staged` (warning)

`requeue=True` appends one ledger row per broken image with outcome `verify_failed` (and the reason), so
`oiv4 fetch --retry-failed verify_failed` fetches them again. Verify never deletes or rewrites a stored
file: the only thing it ever writes is those ledger rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pyarrow.compute as pc

from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.contracts.setting import setting
from oiv4.io.blob_errors import BadArchiveError, BadLocationError, CorruptImageError
from oiv4.io.containers import BlobReader, Member
from oiv4.io.image_decode import decode
from oiv4.io.inventory import Inventory, scan_set
from oiv4.io.ledger import append_rows, load_ledger, now_utc
from oiv4.io.locations import Location, parse_location, staged_path
from oiv4.io.manifest import read_plan
from oiv4.io.storage import Storage

#: Problem kinds that mean an `ok` image is not actually usable; they make verify fail.
BROKEN_KINDS: tuple[str, ...] = ("missing", "size_mismatch", "bad_archive", "damaged", "undecodable", "bad_location")
#: Problem kinds that are reported but do not make the data wrong.
WARNING_KINDS: tuple[str, ...] = ("orphan", "stray_temp", "staged")


@dataclass(frozen=True)
class Problem:
    """One finding. Row-level findings carry the ledger row they contradict (for requeue)."""

    image_set: str
    kind: str
    location: str
    detail: str
    image_id: str | None = None
    row: int | None = None
    shard: int | None = None

    @property
    def broken(self) -> bool:
        return self.kind in BROKEN_KINDS


@dataclass
class SetCheck:
    """What verify found for one set."""

    image_set: str
    planned: int | None  # plan rows (None: no plan)
    ledger_rows: int
    ok_rows: int
    intact: int = 0  # ok rows that passed every check run
    containers: int = 0
    files: int = 0  # loose image files on disk
    problems: list[Problem] = field(default_factory=list)
    requeued: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for p in self.problems if p.kind == kind)

    @property
    def broken(self) -> list[Problem]:
        """Row-level broken findings (one per image) plus archive-level ones."""
        return [p for p in self.problems if p.broken]

    @property
    def broken_images(self) -> int:
        return len({p.row for p in self.problems if p.broken and p.row is not None})

    @property
    def pending(self) -> int:
        return max(0, (self.planned or 0) - self.ledger_rows)


@dataclass
class VerifyReport:
    """The result of `verify`: one SetCheck per set present; `ok` is False when anything is broken."""

    root: str
    deep: bool
    sets: list[SetCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(s.broken for s in self.sets)

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.sets for p in s.problems]


@dataclass(frozen=True)
class VerifySettings:
    """`deep` reads and decodes every image; `requeue` records broken ones as `verify_failed`."""

    deep: bool = setting(
        False, help="Also read every image: check zip CRC-32s and decode every JPEG fully (slow: reads all data)."
    )
    requeue: bool = setting(
        False,
        help="Append a `verify_failed` ledger row for each broken image, so `oiv4 fetch --retry-failed verify_failed` "
        "redoes it. Stored files are never modified or deleted.",
    )
    sets: tuple[str, ...] | None = setting(
        None,
        help="Only this set (repeatable).",
        flag="--set",
        short="-s",
        default_text="every set present",
        choices=tuple(s.value for s in ImageSet),
    )
    #: Pillow and zlib release the GIL, so threads do scale here.
    workers: int = setting(4, help="Threads reading and decoding in --deep mode.")


ProgressFn = Callable[[str, int, int], None]  # (set, done, total)


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
    report = VerifyReport(storage.root, settings.deep)
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
    ledger = load_ledger(storage, image_set)
    inv = scan_set(storage, image_set)
    plan = read_plan(storage, image_set)
    if plan is None and ledger.num_rows == 0 and not inv.files and not inv.containers and not inv.temp:
        return None
    name = image_set.value
    ok = ledger.filter(pc.equal(ledger["outcome"], Outcome.ok.value))
    check = SetCheck(name, None if plan is None else plan.num_rows, ledger.num_rows, ok.num_rows)
    check.containers, check.files = len(inv.containers), len(inv.files)
    blobs = BlobReader(storage)
    indexes = _index_containers(blobs, inv, check)

    referenced: set[str] = set()
    candidates: list[tuple[dict[str, Any], Location]] = []
    cols = ok.select(["image_id", "row", "shard", "location", "stored_bytes"]).to_pylist()
    for r in cols:
        loc_text = r["location"]
        if loc_text is None:
            check.problems.append(_row_problem(name, "bad_location", "", "ok row has no location", r))
            continue
        try:
            loc = parse_location(loc_text)
        except BadLocationError as exc:
            check.problems.append(_row_problem(name, "bad_location", loc_text, str(exc), r))
            continue
        found, key = _stored_size(storage, inv, indexes, loc)
        referenced.add(key)
        staged = staged_path(image_set, r["shard"], r["image_id"]) if isinstance(found, str) and loc.container else None
        if staged is not None and staged in inv.files:
            # Its shard has not packed its archive yet (killed or still running): fetch resumes it.
            detail = f"in {staged}, not yet packed into {loc.container} ({found})"
            check.problems.append(_row_problem(name, "staged", loc_text, detail, r))
            referenced.add(staged)
            found, loc = inv.files[staged], Location(staged)
        if isinstance(found, str):
            kind = "bad_archive" if found.startswith("archive unreadable") else "missing"
            check.problems.append(_row_problem(name, kind, loc_text, found, r))
        elif r["stored_bytes"] is not None and found != r["stored_bytes"]:
            detail = f"{found} bytes stored, ledger says {r['stored_bytes']}"
            check.problems.append(_row_problem(name, "size_mismatch", loc_text, detail, r))
        else:
            candidates.append((r, loc))

    if settings.deep:
        check.problems.extend(_deep_check(blobs, name, candidates, settings.workers, on_progress))
    bad_rows = {p.row for p in check.problems if p.broken}
    check.intact = sum(1 for r, _ in candidates if r["row"] not in bad_rows)
    check.problems.extend(_orphans(name, ledger, inv, indexes, referenced))
    blobs.close()
    if settings.requeue:
        check.requeued = requeue(storage, image_set, ledger, check.problems)
    return check


def _row_problem(image_set: str, kind: str, location: str, detail: str, r: dict[str, Any]) -> Problem:
    return Problem(image_set, kind, location, detail, r["image_id"], r["row"], r["shard"])


def _index_containers(blobs: BlobReader, inv: Inventory, check: SetCheck) -> dict[str, dict[str, Member] | str]:
    """Every zip/tar's member index, or the reason it cannot be indexed (reported once per archive)."""
    out: dict[str, dict[str, Member] | str] = {}
    for container in sorted(inv.containers):
        try:
            out[container] = blobs.index(container)
        except BadArchiveError as exc:
            out[container] = str(exc)
            check.problems.append(Problem(check.image_set, "bad_archive", container, str(exc)))
    return out


def _stored_size(
    storage: Storage, inv: Inventory, indexes: dict[str, dict[str, Member] | str], loc: Location
) -> tuple[int | str, str]:
    """(stored size at `loc` or a sentence saying why there is none, the file/member it resolved to)."""
    if loc.container is None:
        size = inv.files.get(loc.path)
        if size is None and not loc.path.endswith(".jpg") and storage.exists(loc.path):
            size = storage.size(loc.path)  # a location the inventory does not list (not a .jpg)
        return ("file is missing" if size is None else size), loc.path
    idx = indexes.get(loc.container)
    if idx is None:
        return f"archive {loc.container} is missing", str(loc)
    if isinstance(idx, str):
        return f"archive unreadable: {idx}", str(loc)
    name = loc.path
    if name not in idx and loc.kind == "tar" and f"{name}.jpg" in idx:
        name = f"{name}.jpg"  # a webdataset sample key: its image is the `.jpg` member
    member = idx.get(name)
    key = f"{loc.container}:{name}"
    return (f"no member {loc.path!r} in {loc.container}" if member is None else member.size), key


def _deep_check(
    blobs: BlobReader,
    image_set: str,
    candidates: list[tuple[dict[str, Any], Location]],
    workers: int,
    on_progress: ProgressFn | None,
) -> list[Problem]:
    # Read in storage order (archive, then offset order ~ name order) so disks stream instead of seek.
    todo = sorted(candidates, key=lambda c: (c[1].container or "", c[1].path))

    def one(item: tuple[dict[str, Any], Location]) -> Problem | None:
        r, loc = item
        try:
            data = blobs.read(loc)  # zip members: CRC-32 and size checked here
        except (CorruptImageError, BadArchiveError, OSError) as exc:
            return _row_problem(image_set, "damaged", str(loc), str(exc), r)
        try:
            decode(data, str(loc))
        except CorruptImageError as exc:
            return _row_problem(image_set, "undecodable", str(loc), str(exc).split(": ", 1)[-1], r)
        return None

    found: list[Problem] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, problem in enumerate(pool.map(one, todo, chunksize=1), 1):
            if problem is not None:
                found.append(problem)
            if on_progress is not None and (i % 256 == 0 or i == len(todo)):
                on_progress(image_set, i, len(todo))
    return found


def _orphans(
    image_set: str,
    ledger: Any,
    inv: Inventory,
    indexes: dict[str, dict[str, Member] | str],
    referenced: set[str],
) -> Iterable[Problem]:
    not_ok = ledger.filter(pc.not_equal(ledger["outcome"], Outcome.ok.value)).select(["image_id", "outcome"])
    outcome_of = dict(zip(not_ok["image_id"].to_pylist(), not_ok["outcome"].to_pylist(), strict=True))

    def why(image_id: str) -> str:
        o = outcome_of.get(image_id)
        return "no ledger row points at it" if o is None else f"ledger outcome is {o}, not ok"

    for rel in sorted(inv.files):
        if rel not in referenced:
            yield Problem(image_set, "orphan", rel, why(rel.rsplit("/", 1)[-1].removesuffix(".jpg")))
    for container, idx in indexes.items():
        if isinstance(idx, str):
            continue
        for member in idx:
            loc = f"{container}:{member}"
            stem = member.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if loc in referenced:
                continue
            if not member.endswith(".jpg") and f"{container}:{member.rsplit('.', 1)[0]}.jpg" in referenced:
                continue  # a webdataset sidecar (<id>.json) of a referenced image
            yield Problem(image_set, "orphan", loc, why(stem))
    for rel in inv.temp:
        yield Problem(image_set, "stray_temp", rel, "temp file left by an interrupted write (safe to delete)")


def requeue(storage: Storage, image_set: ImageSet, ledger: Any, problems: list[Problem]) -> int:
    """Append a `verify_failed` ledger row for every broken image; returns how many were recorded.

    The new row copies the old one (URL, source, attempts) and is timestamped after it, so it is the
    latest row for that manifest row and `fetch --retry-failed verify_failed` picks it up.
    """
    broken = {p.row: p for p in problems if p.broken and p.row is not None}
    if not broken:
        return 0
    rows = ledger.filter(pc.is_in(ledger["row"], value_set=_int_array(list(broken)))).to_pylist()
    now = now_utc()
    by_shard: dict[int, list[dict[str, Any]]] = {}
    for old in rows:
        p = broken[old["row"]]
        started = old.get("started_at")
        new = dict(old)
        new.update(
            outcome=Outcome.verify_failed.value,
            reason=f"verify: {p.kind}: {p.detail}",
            started_at=max(now, started + timedelta(milliseconds=1)) if started is not None else now,
            elapsed_s=0.0,
        )
        by_shard.setdefault(int(old["shard"]), []).append(new)
    for shard, shard_rows in sorted(by_shard.items()):
        append_rows(storage, image_set, shard, shard_rows)
    return sum(len(v) for v in by_shard.values())


def _int_array(values: list[int]) -> Any:
    import pyarrow as pa

    return pa.array(values, pa.int64())


def summarize(report: VerifyReport) -> Counter[str]:
    """Problem counts by kind over all sets."""
    return Counter(p.kind for p in report.problems)


__all__ = [
    "BROKEN_KINDS",
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
