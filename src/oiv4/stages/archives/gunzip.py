"""Streaming gzip decoding with a choice of decoder, exact error offsets and bounded memory.

Decoder measurements (benchmarks/archive_convert.py: a 1 GB tar.gz of ~150 KB photo-like JPEGs made with
gzip -6, 2-core EPYC VM shared with other work, load ~4, best of 3, GB/s of decompressed output):
in-process zlib-ng 0.33, isal 0.29, zlib 0.27; `pigz -dc` 0.24; `gzip -dc` 0.16 (an earlier run at
load ~6: isal 0.28, zlib-ng 0.27, zlib 0.19). JPEG data is nearly incompressible, so inflate is mostly
literal decoding and isal's usual lead over zlib-ng disappears; `igzip_threaded` / `gzip_ng_threaded`
only move that same work to a thread, which the converter already does (and isal's decompressobj was
seen not to overlap with the other thread's work, zlib-ng's does). Whole conversions (inflate + tar +
zip + SHA-256) took 3.9 s with zlib-ng, 4.4 s with isal and 4.9 s with zlib. zlib-ng is the default:
fastest here, and it can copy its state, which gives exact error offsets (below); stdlib zlib, the
reference implementation, is the fallback for a stream the first decoder rejects (the facts file
reports `pigz -d` failing with "invalid deflate data" on real archives that other decoders read).
`pigz -dc` as a subprocess decoder was measured and left out: slower than zlib-ng in-process, not
installed everywhere, and it reports no error offset.

Offsets: input is fed in blocks; a rejected block is re-fed in small steps from a copy of the decoder
state taken before it (zlib and zlib-ng can copy their state), so the error names the exact compressed
byte where the data stopped making sense. A decoder that cannot copy its state reports the block.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from oiv4.contracts.errors import CorruptStreamError

FEED = 1 << 20  # compressed bytes per decoder call
OUT_MAX = 4 << 20  # decompressed bytes per decoder call: bounds memory whatever the ratio (bombs)
GZIP_MAGIC = b"\x1f\x8b"


def _isal() -> tuple[Any, type[Exception]]:
    from isal import isal_zlib

    return isal_zlib.decompressobj(31), isal_zlib.error


def _zlib_ng() -> tuple[Any, type[Exception]]:
    from zlib_ng import zlib_ng

    return zlib_ng.decompressobj(31), zlib_ng.error


def _zlib() -> tuple[Any, type[Exception]]:
    return zlib.decompressobj(31), zlib.error


_FACTORIES: dict[str, Callable[[], tuple[Any, type[Exception]]]] = {"zlib-ng": _zlib_ng, "isal": _isal, "zlib": _zlib}
DECODERS: tuple[str, ...] = ("zlib-ng", "isal", "zlib")
DEFAULT_DECODERS: tuple[str, ...] = ("zlib-ng", "zlib")


def decoder_available(name: str) -> bool:
    if name not in _FACTORIES:
        return False
    try:
        _FACTORIES[name]()
    except ImportError:
        return False
    return True


def decode(archive: str, decoder: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompressed bytes of the gzip stream `chunks` (one or more members); raises CorruptStreamError."""
    if decoder not in _FACTORIES:
        raise ValueError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
    return _decode_zlib_like(archive, decoder, _FACTORIES[decoder], chunks)


def _feed(d: Any, data: memoryview | bytes) -> Iterator[bytes]:
    """Hand `data` to decoder `d`, yielding output in bounded pieces, until consumed or the member ends."""
    out = d.decompress(data, OUT_MAX)
    if out:
        yield out
    while d.unconsumed_tail and not d.eof:
        out = d.decompress(d.unconsumed_tail, OUT_MAX)
        if out:
            yield out


def _decode_zlib_like(
    archive: str, name: str, factory: Callable[[], tuple[Any, type[Exception]]], chunks: Iterable[bytes]
) -> Iterator[bytes]:
    d, error = factory()
    offset = 0  # compressed offset of the current chunk
    in_member = True  # `d` has not reached its member's end
    fed_any = False
    padding = False  # saw zero bytes after the last member (tar-style padding): only zeros may follow
    for chunk in chunks:
        view = memoryview(chunk)
        for pos in range(0, len(view), FEED):
            block = view[pos : pos + FEED]
            block_off = offset + pos
            while len(block):
                fed_any = True
                if not in_member:
                    if padding or block[0] == 0:
                        if any(block.tobytes()):
                            raise CorruptStreamError(
                                archive, name, block_off, len(block), "non-zero bytes after zero padding"
                            )
                        padding = True
                        break
                    if bytes(block[:2]) != GZIP_MAGIC[: len(block[:2])]:
                        raise CorruptStreamError(
                            archive, name, block_off, 1, "garbage after the end of the gzip stream"
                        )
                    d, error = factory()
                    in_member = True
                snapshot = d.copy() if hasattr(d, "copy") else None
                try:
                    yield from _feed(d, block)
                except error as exc:
                    detail = str(exc).removeprefix("Error -3 while decompressing data: ")
                    bad = _first_bad_byte(snapshot, block, error) if snapshot is not None else None
                    if bad is None:
                        raise CorruptStreamError(archive, name, block_off, len(block), detail) from None
                    raise CorruptStreamError(archive, name, block_off + bad, 1, detail) from None
                if not d.eof:
                    break
                in_member = False
                rest = d.unused_data
                block_off += len(block) - len(rest)
                block = memoryview(rest)
        offset += len(view)
    if not fed_any:
        raise CorruptStreamError(archive, name, 0, 0, "the archive is empty")
    if in_member:
        yield d.flush()
        if not d.eof:
            raise CorruptStreamError(
                archive, name, offset, 0, "the stream ends before the gzip end marker: truncated archive"
            )


def _first_bad_byte(snapshot: Any, block: memoryview, error: type[Exception]) -> int | None:
    """Index in `block` of the byte whose arrival makes the decoder fail, replaying from `snapshot`.

    Coarse steps of 4 KiB find the failing step, then single bytes inside it. Only runs on failure.
    """
    good = snapshot
    pos, step = 0, 4096
    while pos < len(block):
        trial = good.copy()
        try:
            for _ in _feed(trial, block[pos : pos + step]):
                pass
        except error:
            break
        if trial.eof:
            return None  # the member ended inside this block: not the simple case, report the block
        good, pos = trial, pos + step
    else:
        return None
    for k in range(pos, min(pos + step, len(block))):
        try:
            for _ in _feed(good, block[k : k + 1]):
                pass
        except error:
            return k
        if good.eof:
            return None
    return None
