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
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from oiv4.contracts.errors import Interrupted
from oiv4.contracts.schema import Outcome
from oiv4.io.checksum import StreamingChecksum
from oiv4.io.jpeg_layout import structure_problem
from oiv4.io.ledger_write import now_utc
from oiv4.io.locations import member_location
from oiv4.stages.archives.gunzip import decode
from oiv4.stages.archives.members import MemberChecker, check_jpeg, jpeg_size, printable
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
    rows: list[dict[str, Any]]
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


def convert_stream(
    *,
    archive: str,
    stem: str,
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
    q: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=QUEUE_ITEMS)
    stop = threading.Event()

    def put(item: tuple[int, Any]) -> None:
        while True:
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                if stop.is_set():
                    raise _Stopped() from None

    def raw_pieces() -> Iterator[memoryview]:
        for chunk in chunks:
            view = memoryview(chunk)
            for i in range(0, len(view), RAW_PIECE):
                piece = view[i : i + RAW_PIECE]
                put((_RAW, piece))
                yield piece

    def produce() -> None:
        try:
            for data in decode(archive, decoder, raw_pieces()):
                put((_DATA, data))
            put((_END, None))
        except _Stopped:
            pass
        except BaseException as exc:
            with contextlib.suppress(_Stopped):
                put((_ERR, exc))

    result = ConvertOutcome(rows=[], outcomes=Counter())
    sha = hashlib.sha256()
    md5 = hashlib.md5() if want_md5 else None

    def pieces() -> Iterator[bytes]:
        while True:
            kind, item = q.get()
            if kind == _RAW:
                sha.update(item)
                if md5 is not None:
                    md5.update(item)
                if tee is not None:
                    tee.write(item)
                result.compressed_bytes += len(item)
                if progress:
                    progress(len(item))
            elif kind == _DATA:
                yield item
            elif kind == _END:
                return
            else:
                raise item

    producer = threading.Thread(target=produce, name=f"oiv4-inflate-{stem}", daemon=True)
    producer.start()
    try:
        stream = pieces()
        reader = PieceReader(stream)
        _convert_members(
            result, reader, archive, stem, shard, zip_rel, out, plan_rows, max_member_bytes, source_url, started_at
        )
        # Drain to the end so the decoder checks the gzip CRC and every compressed byte is hashed.
        trailing = 0
        for piece in stream:
            if any(piece):
                trailing += len(piece)
        if trailing:
            result.notes.append(f"{trailing:,} non-zero bytes after the tar end-of-archive marker were ignored")
    finally:
        stop.set()
        producer.join()
    result.sha256 = sha.hexdigest()
    result.md5 = md5.hexdigest() if md5 is not None else None
    return result


def _convert_members(
    result: ConvertOutcome,
    reader: PieceReader,
    archive: str,
    stem: str,
    shard: int,
    zip_rel: str,
    out: IO[bytes],
    plan_rows: dict[str, int],
    max_member_bytes: int,
    source_url: str,
    started_at: datetime,
) -> None:
    checker = MemberChecker(stem, max_member_bytes)
    safe_name = re.compile(rf"^{re.escape(stem)}/[0-9a-f]{{16}}\.jpg$")
    verdicts: dict[int, Any] = {}
    by_id: dict[str, int] = {}  # image_id -> index in result.rows of the row holding its plan row
    base = {"attempts": 1, "source": f"archive:{archive}", "url": source_url, "started_at": started_at}

    def want(m: TarMember) -> bool:
        v = checker.check(m)
        verdicts[m.index] = v
        return v.outcome is None

    def add(image_id: str | None, m: TarMember, outcome: str, reason: str, stored: bool, **extra: Any) -> None:
        row = negative_row(shard, m.index)
        if image_id is not None and image_id in plan_rows:
            held = by_id.get(image_id)
            if held is None:
                row = plan_rows[image_id]
                by_id[image_id] = len(result.rows)
            elif stored and result.rows[held]["outcome"] != Outcome.ok:
                # A good copy beats a refused one seen earlier: it takes the plan row over.
                result.rows[held]["row"] = negative_row(shard, result.rows[held].pop("_index"))
                row = plan_rows[image_id]
                by_id[image_id] = len(result.rows)
        result.rows.append(
            {
                **base,
                "image_id": image_id if image_id is not None else printable(m.name, 200),
                "row": row,
                "outcome": outcome,
                "reason": reason,
                "_index": m.index,
                **extra,
            }
        )
        result.outcomes[outcome] += 1

    # Each member's own timing: from when the previous one was done (so its header, decompression and read
    # count) to when its row is recorded. The report's latency histogram and per-member times need it.
    clock = {"started_at": now_utc(), "t": time.monotonic()}

    def timed() -> dict[str, Any]:
        now = time.monotonic()
        timing = {"started_at": clock["started_at"], "elapsed_s": round(now - clock["t"], 6)}
        clock["started_at"], clock["t"] = now_utc(), now
        return timing

    zf = StoredZipWriter(out)
    for m, views in iter_members(reader, want, archive):
        if checker.is_own_dir(m):
            result.directories += 1
            continue
        result.members += 1
        v = verdicts[m.index]
        if views is None:
            add(v.image_id, m, v.outcome, v.reason, False, bytes_downloaded=m.size, **timed())
            continue
        # JPEG headers (magic, frame size) live in the first 64 KB; usually all in the first piece: no copy.
        head: bytes | memoryview = views[0] if views else b""
        if len(head) < min(65536, m.size):
            head = b"".join(views)[:65536]
        bad = check_jpeg(bytes(head[:16]))
        if bad is not None:
            add(
                v.image_id, m, Outcome.not_image, f"{printable(m.name)}: {bad}", False, bytes_downloaded=m.size,
                **timed(),
            )  # fmt: skip
            continue
        # Structure (headers, EOI after the scans, no zero-filled stretch): catches truncated and zero-filled
        # members at C speed; a strict decode of every member would cost more than the conversion itself.
        problem = structure_problem(b"".join(views))
        if problem is not None:
            add(
                v.image_id, m, Outcome.corrupt_jpeg, f"{printable(m.name)}: {problem}", False,
                bytes_downloaded=m.size, **timed(),
            )  # fmt: skip
            continue
        # Defence in depth: only a checked name ever reaches the zip.
        assert safe_name.match(v.name), v.name
        zf.add(v.name, views, m.mtime)
        digest = StreamingChecksum()  # of the member's bytes as stored in the zip (verify re-hashes them)
        for piece in views:
            digest.update(piece)
        dims = jpeg_size(head)
        in_plan = v.image_id in plan_rows
        add(
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
            **timed(),
        )
        result.stored_names.append(v.name)
        result.stored_bytes += m.size
    zf.close()  # the central directory; only reached when every member went through
    for image_id, row in plan_rows.items():
        if image_id not in by_id:
            result.rows.append(
                {
                    **base,
                    "image_id": image_id,
                    "row": row,
                    "outcome": Outcome.missing_from_archive,
                    "reason": f"not among the {result.members:,} members of {archive}",
                }
            )
            result.outcomes[Outcome.missing_from_archive] += 1
    for r in result.rows:
        r.pop("_index", None)
