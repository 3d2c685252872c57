"""verify's content checks: read the stored bytes of every row that passed the cheap checks and prove them.

- every read goes through `BlobReader.read`, so a zip member's CRC-32 and size are checked   -> `damaged`
- the bytes must hash to the ledger's `checksum` (io.checksum; xxh3-128 or sha256)         -> `checksum_mismatch`
- rows recorded without a checksum cannot be proven, only read                            -> `unverifiable` (warning)
- deep only: the image decodes strictly (io.strict_decode, full size): a libjpeg
  "Corrupt JPEG data" / "Premature end" warning                                           -> `corrupt_jpeg`
  anything else that does not decode                                                      -> `undecodable`

Why a checksum and not only decoding: a zeroed block or one flipped bit in a JPEG often still decodes without
a warning (io.strict_decode's blind spot) and keeps the size, so only the checksum recorded at write time sees it.

Works on one slice of rows at a time (so 9M rows never become 9M Python objects at once); reads in storage order
(container, then member) with `workers` threads: file reads, zlib, xxh3 and libjpeg-turbo release the GIL.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import BadArchiveError, BadLocationError, ChecksumError, CorruptImageError, OutcomeError
from oiv4.contracts.schema import Outcome
from oiv4.io.checksum import verify_checksum
from oiv4.io.containers import BlobReader
from oiv4.io.locations import parse_location
from oiv4.io.strict_decode import decode_strict
from oiv4.stages.verify.findings import SetCheck

ProgressFn = Callable[[str, int, int], None]  # (set, done, total)
#: The largest image verify decodes (as fetch's default --max-megapixels): a stored image is at most that.
DEEP_MAX_PIXELS = 200_000_000
_KIND_ORDER = ("damaged", "checksum_mismatch", "corrupt_jpeg", "undecodable")
UNVERIFIABLE = "no checksum recorded for it: run `oiv4 hash --root R` to record one from the stored bytes"


@dataclass
class ContentProgress:
    """Rows read so far and rows known to need reading (grows slice by slice), for a progress bar."""

    on_progress: ProgressFn | None
    image_set: str
    done: int = 0
    total: int = 0

    def tick(self, n: int = 1) -> None:
        self.done += n
        if self.on_progress is not None and (self.done % 256 == 0 or self.done == self.total):
            self.on_progress(self.image_set, self.done, self.total)


def check_content(
    blobs: BlobReader, check: SetCheck, rows: pa.Table, *, deep: bool, workers: int, progress: ContentProgress
) -> int:
    """Read and prove every row of `rows` (VERIFY_COLUMNS, all passed the size check); returns how many broke.

    Without `deep`, rows lacking a checksum are reported `unverifiable` and not read (nothing to compare);
    with `deep` every row is read and decoded.
    """
    if rows.num_rows == 0:
        return 0
    no_sum = pc.is_null(rows["checksum"]).to_numpy(zero_copy_only=False)
    check.add("unverifiable", rows.filter(pa.array(no_sum)), UNVERIFIABLE)
    todo = rows if deep else rows.filter(pa.array(~no_sum))
    if todo.num_rows == 0:
        return 0
    # Storage order: containers stream instead of seeking (loose files sort by path, i.e. by directory).
    todo = todo.take(pc.sort_indices(todo, [("location", "ascending")]))
    locations = todo["location"].to_pylist()
    sums = todo["checksum"].to_pylist()
    progress.total += len(locations)

    def one(i: int) -> list[tuple[str, str]]:
        return _prove(blobs, locations[i], sums[i], deep)

    by_kind: dict[str, tuple[list[int], list[str]]] = {}
    broken: set[int] = set()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, found in enumerate(pool.map(one, range(len(locations)), chunksize=16)):
            for kind, detail in found:
                at, text = by_kind.setdefault(kind, ([], []))
                at.append(i)
                text.append(detail)
                broken.add(i)
            progress.tick()
    # Byte-level findings first, decoding last: requeue keeps a row's last finding, the most specific one.
    for kind in sorted(by_kind, key=_KIND_ORDER.index):
        at, text = by_kind[kind]
        check.add(kind, todo.take(pa.array(at, pa.int64())), pa.array(text, pa.string()))
    return len(broken)


def _prove(blobs: BlobReader, location: str, expected: str | None, deep: bool) -> list[tuple[str, str]]:
    """(kind, detail) of everything wrong with the stored image at `location`; empty when it is proven sound.

    Deep mode still decodes an image whose checksum differs, to say whether the damage shows in the pixels.
    """
    try:
        data = blobs.read(parse_location(location))  # zip members: CRC-32 and size checked here
    except (CorruptImageError, BadArchiveError, BadLocationError, OSError) as exc:
        return [("damaged", str(exc))]
    found = []
    if expected is not None:
        try:
            wrong = verify_checksum(data, expected)
        except ChecksumError as exc:
            wrong = f"the ledger's checksum is unusable: {exc}"
        if wrong is not None:
            found.append(("checksum_mismatch", wrong))
    if deep:
        try:
            decode_strict(data, max_pixels=DEEP_MAX_PIXELS)
        except OutcomeError as exc:
            found.append(("corrupt_jpeg" if exc.outcome == Outcome.corrupt_jpeg else "undecodable", exc.reason))
    return found
