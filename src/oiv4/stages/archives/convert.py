"""One pass from compressed bytes to a zip of STORED JPEGs, with a ledger row for every member.

Two threads share the work on a 2-core machine: the producer reads compressed chunks and inflates
them (zlib-ng releases the GIL while it inflates); the consumer hashes the compressed chunks (SHA-256, and MD5 when
the ETag is one), parses tar headers, checks members and writes zip entries (CRC-32 and writes release
the GIL too). Nothing is extracted to disk: the zip is the only thing written, plus the `.tar.gz`
itself when asked to keep it (`tee`).

Ledger rows of members that are not plan rows (refused members, or images the plan does not list)
get a negative `row` that is unique within the set and stable across runs:
`-(shard * 2**32) - (member_index + 1)`, where `member_index` is the member's 0-based position in the
tar (counting every header that is not a pax/GNU meta header, the archive's own folder entry included).
Coverage of the plan is therefore `row >= 0`; every member is still accounted for.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO, Any

from oiv4.contracts.errors import Interrupted
from oiv4.contracts.ledger_row import LedgerRow
from oiv4.contracts.schema import Outcome
from oiv4.io.checksum import StreamingChecksum
from oiv4.io.jpeg_layout import structure_problem
from oiv4.io.ledger_write import now_utc
from oiv4.io.locations import member_location
from oiv4.stages.archives.gunzip import decode
from oiv4.stages.archives.members import MemberChecker, Verdict, check_jpeg, jpeg_size, printable
from oiv4.stages.archives.tarstream import PieceReader, TarMember, iter_members
from oiv4.stages.archives.zipwriter import StoredZipWriter

RAW_PIECE = 4 << 20  # compressed bytes per queue item
QUEUE_ITEMS = 24  # bounded hand-off between the threads: ~100 MB in flight at most
_RAW, _DATA, _END, _ERR = range(4)


def negative_row(shard: int, member_index: int) -> int:
    """The ledger `row` of a member that is not a plan row (see the module docstring)."""
    return -(shard << 32) - (member_index + 1)


@dataclass
class ConvertOutcome:
    rows: list[LedgerRow]
    outcomes: Counter[str]
    members: int = 0  # tar members seen (the archive's own folder entry excluded)
    directories: int = 0
    stored_names: list[str] = field(default_factory=list)
    compressed_bytes: int = 0
    stored_bytes: int = 0
    sha256: str = ""
    md5: str | None = None
    notes: list[str] = field(default_factory=list)


class _Stopped(Interrupted):
    pass


class _Inflation:
    """The producer thread and its bounded hand-off: the producer reads the compressed chunks and inflates them;
    the consumer (`pieces`) hashes and tees every compressed piece and yields the inflated data."""

    def __init__(
        self,
        archive: str,
        decoder: str,
        chunks: Iterable[bytes],
        result: ConvertOutcome,
        *,
        want_md5: bool,
        tee: IO[bytes] | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.archive = archive
        self.decoder = decoder
        self.chunks = chunks
        self.result = result
        self.tee = tee
        self.progress = progress
        self.sha = hashlib.sha256()
        self.md5 = hashlib.md5() if want_md5 else None
        self._q: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=QUEUE_ITEMS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _put(self, item: tuple[int, Any]) -> None:
        while True:
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._stop.is_set():
                    raise _Stopped() from None

    def _raw_pieces(self) -> Iterator[memoryview]:
        for chunk in self.chunks:
            view = memoryview(chunk)
            for i in range(0, len(view), RAW_PIECE):
                piece = view[i : i + RAW_PIECE]
                self._put((_RAW, piece))
                yield piece

    def _produce(self) -> None:
        try:
            for data in decode(self.archive, self.decoder, self._raw_pieces()):
                self._put((_DATA, data))
            self._put((_END, None))
        except _Stopped:
            pass
        except BaseException as exc:
            with contextlib.suppress(_Stopped):
                self._put((_ERR, exc))

    def pieces(self) -> Iterator[bytes]:
        """The inflated data, in order; raises what the producer raised."""
        while True:
            kind, item = self._q.get()
            if kind == _RAW:
                self.sha.update(item)
                if self.md5 is not None:
                    self.md5.update(item)
                if self.tee is not None:
                    self.tee.write(item)
                self.result.compressed_bytes += len(item)
                if self.progress:
                    self.progress(len(item))
            elif kind == _DATA:
                yield item
            elif kind == _END:
                return
            else:
                raise item


def convert_stream(
    *,
    archive: str,
    stem: str,
    image_set: str,
    shard: int,
    zip_rel: str,
    chunks: Iterable[bytes],
    out: IO[bytes],
    decoder: str,
    plan_rows: dict[str, int],
    max_member_bytes: int,
    source_url: str,
    want_md5: bool = False,
    tee: IO[bytes] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ConvertOutcome:
    """Inflate `chunks` (a .tar.gz), write every acceptable member to the zip open on `out`.

    Raises CorruptStreamError / CorruptTarError; the caller discards `out` then (it is a temp file).
    """
    started_at = now_utc()
    result = ConvertOutcome(rows=[], outcomes=Counter())
    inflation = _Inflation(archive, decoder, chunks, result, want_md5=want_md5, tee=tee, progress=progress)
    inflation.start(f"oiv4-inflate-{stem}")
    try:
        stream = inflation.pieces()
        base = {"attempts": 1, "source": f"archive:{archive}", "url": source_url, "started_at": started_at}
        rows = _MemberRows(result, image_set, shard, plan_rows, base)
        _convert_members(result, rows, PieceReader(stream), archive, stem, zip_rel, out, max_member_bytes)
        rows.add_missing(archive)
        # Drain to the end so the decoder checks the gzip CRC and every compressed byte is hashed.
        trailing = 0
        for piece in stream:
            if any(piece):
                trailing += len(piece)
        if trailing:
            result.notes.append(f"{trailing:,} non-zero bytes after the tar end-of-archive marker were ignored")
    finally:
        inflation.stop()
    result.sha256 = inflation.sha.hexdigest()
    result.md5 = inflation.md5.hexdigest() if inflation.md5 is not None else None
    return result


class _MemberRows:
    """The ledger rows of one archive's members, each timed, with every plan row held by exactly one of them."""

    def __init__(
        self, result: ConvertOutcome, image_set: str, shard: int, plan_rows: dict[str, int], base: dict[str, Any]
    ) -> None:
        self.result = result
        self.image_set = image_set
        self.shard = shard
        self.plan_rows = plan_rows
        self.base = base
        self.by_id: dict[str, int] = {}  # image_id -> index in result.rows of the row holding its plan row
        self.member_index: list[int] = []  # the tar member of each of result.rows
        # Each member's own timing: from when the previous one was done (so its header, decompression and read
        # count) to when its row is recorded. The report's latency histogram and per-member times need it.
        self._started_at = now_utc()
        self._t = time.monotonic()

    def timed(self) -> dict[str, Any]:
        """The timing fields of the member finished now."""
        now = time.monotonic()
        timing = {"started_at": self._started_at, "elapsed_s": round(now - self._t, 6)}
        self._started_at, self._t = now_utc(), now
        return timing

    def add(
        self, image_id: str | None, m: TarMember, outcome: str | None, reason: str, stored: bool, **extra: Any
    ) -> None:
        """Record member `m`: the plan row of `image_id` if it holds none yet (or only a refused copy of it)."""
        rows = self.result.rows
        row = negative_row(self.shard, m.index)
        if image_id is not None and image_id in self.plan_rows:
            held = self.by_id.get(image_id)
            if held is None:
                row = self.plan_rows[image_id]
                self.by_id[image_id] = len(rows)
            elif stored and rows[held].outcome != Outcome.ok:
                # A good copy beats a refused one seen earlier: it takes the plan row over.
                rows[held] = replace(rows[held], row=negative_row(self.shard, self.member_index[held]))
                row = self.plan_rows[image_id]
                self.by_id[image_id] = len(rows)
        name = image_id if image_id is not None else printable(m.name, 200)
        rows.append(self._row(name, row, outcome, reason, **extra))
        self.member_index.append(m.index)
        self.result.outcomes[outcome] += 1

    def add_missing(self, archive: str) -> None:
        """A row for every plan row no member held."""
        for image_id, row in self.plan_rows.items():
            if image_id not in self.by_id:
                reason = f"not among the {self.result.members:,} members of {archive}"
                self.result.rows.append(self._row(image_id, row, Outcome.missing_from_archive, reason))
                self.result.outcomes[Outcome.missing_from_archive] += 1

    def _row(self, image_id: str, row: int, outcome: str | None, reason: str, **extra: Any) -> LedgerRow:
        fields = {**self.base, **extra}
        return LedgerRow(
            image_id=image_id, set=self.image_set, shard=self.shard, row=row, outcome=outcome, reason=reason, **fields
        )


def _refusal(m: TarMember, views: list[memoryview], head: bytes | memoryview) -> tuple[str, str] | None:
    """(outcome, reason) when a member's bytes are not a whole JPEG, else None."""
    bad = check_jpeg(bytes(head[:16]))
    if bad is not None:
        return Outcome.not_image, f"{printable(m.name)}: {bad}"
    # Structure (headers, EOI after the scans, no zero-filled stretch): catches truncated and zero-filled
    # members at C speed; a strict decode of every member would cost more than the conversion itself.
    problem = structure_problem(b"".join(views))
    if problem is not None:
        return Outcome.corrupt_jpeg, f"{printable(m.name)}: {problem}"
    return None


def _convert_members(
    result: ConvertOutcome,
    rows: _MemberRows,
    reader: PieceReader,
    archive: str,
    stem: str,
    zip_rel: str,
    out: IO[bytes],
    max_member_bytes: int,
) -> None:
    checker = MemberChecker(stem, max_member_bytes)
    safe_name = re.compile(rf"^{re.escape(stem)}/[0-9a-f]{{16}}\.jpg$")
    verdicts: dict[int, Verdict] = {}

    def want(m: TarMember) -> bool:
        v = checker.check(m)
        verdicts[m.index] = v
        return v.outcome is None

    zf = StoredZipWriter(out)
    for m, views in iter_members(reader, want, archive):
        if checker.is_own_dir(m):
            result.directories += 1
            continue
        result.members += 1
        v = verdicts[m.index]
        if views is None:
            rows.add(v.image_id, m, v.outcome, v.reason, False, bytes_downloaded=m.size, **rows.timed())
            continue
        # JPEG headers (magic, frame size) live in the first 64 KB; usually all in the first piece: no copy.
        head: bytes | memoryview = views[0] if views else b""
        if len(head) < min(65536, m.size):
            head = b"".join(views)[:65536]
        refused = _refusal(m, views, head)
        if refused is not None:
            rows.add(v.image_id, m, *refused, False, bytes_downloaded=m.size, **rows.timed())
            continue
        # Defence in depth: only a checked name ever reaches the zip.
        assert safe_name.match(v.name), v.name
        zf.add(v.name, views, m.mtime)
        digest = StreamingChecksum()  # of the member's bytes as stored in the zip (verify re-hashes them)
        for piece in views:
            digest.update(piece)
        dims = jpeg_size(head)
        in_plan = v.image_id in rows.plan_rows
        rows.add(
            v.image_id,
            m,
            Outcome.ok,
            f"stored from {archive}" if in_plan else f"stored from {archive}; not a row of the plan",
            True,
            bytes_downloaded=m.size,
            stored_bytes=m.size,
            stored_width=dims[0] if dims else None,
            stored_height=dims[1] if dims else None,
            location=member_location(zip_rel, v.name),
            checksum=digest.value,
            **rows.timed(),
        )
        result.stored_names.append(v.name)
        result.stored_bytes += m.size
    zf.close()  # the central directory; only reached when every member went through
