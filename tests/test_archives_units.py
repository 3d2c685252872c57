"""The pieces under the archive stage: gzip decoding edge cases, the tar reader, member checks."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from oiv4.archives.errors import CorruptStreamError, CorruptTarError
from oiv4.archives.gunzip import decode
from oiv4.archives.members import MemberChecker, jpeg_size
from oiv4.archives.tarstream import PieceReader, iter_members
from test_archives_support import jpeg


def chunks(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


@pytest.mark.parametrize("decoder", ["zlib-ng", "isal", "zlib"])
def test_multi_member_gzip_with_zero_padding_decodes_whole(decoder: str) -> None:
    data = gzip.compress(b"a" * 100_000) + gzip.compress(b"b" * 10) + b"\0" * 700
    assert b"".join(decode("x.tar.gz", decoder, chunks(data, 333))) == b"a" * 100_000 + b"b" * 10


@pytest.mark.parametrize("decoder", ["zlib-ng", "isal", "zlib"])
def test_garbage_after_the_stream_is_an_error_with_its_offset(decoder: str) -> None:
    first = gzip.compress(b"hello")
    with pytest.raises(CorruptStreamError) as err:
        for _ in decode("x.tar.gz", decoder, [first + b"JUNK"]):
            pass
    assert err.value.offset == len(first) and "garbage after the end of the gzip stream" in str(err.value)


def test_highly_compressible_stream_comes_out_in_bounded_pieces() -> None:
    bomb = gzip.compress(bytes(64 << 20), compresslevel=9)  # 64 MiB of zeros in ~64 KB
    sizes = [len(p) for p in decode("bomb.tar.gz", "zlib-ng", [bomb])]
    assert sum(sizes) == 64 << 20 and max(sizes) <= 4 << 20


def test_empty_archive_is_reported() -> None:
    with pytest.raises(CorruptStreamError, match="the archive is empty"):
        list(decode("x.tar.gz", "zlib", []))


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_reader_reads_long_names_in_every_format(fmt: int) -> None:
    long_dir = "d" * 120 if fmt != tarfile.USTAR_FORMAT else "d" * 90  # ustar splits into prefix + name
    names = [f"{long_dir}/{'a' * 16}.jpg", "validation/0123456789abcdef.jpg"]
    raw = tar_bytes([(tarfile.TarInfo(n), n.encode() * 3) for n in names], fmt)
    got = [(m.name, bytes(b"".join(v))) for m, v in iter_members(PieceReader(chunks(raw, 100)), lambda m: True)]
    assert got == [(n, n.encode() * 3) for n in names]


def test_tar_header_with_a_bad_checksum_is_corrupt() -> None:
    raw = bytearray(tar_bytes([(tarfile.TarInfo("validation/0123456789abcdef.jpg"), b"x")], tarfile.GNU_FORMAT))
    raw[0] ^= 1
    with pytest.raises(CorruptTarError, match="checksum mismatch at uncompressed byte 0"):
        list(iter_members(PieceReader([bytes(raw)]), lambda m: True, "validation.tar.gz"))


def test_tar_stream_cut_inside_a_member_is_corrupt() -> None:
    raw = tar_bytes([(tarfile.TarInfo("validation/0123456789abcdef.jpg"), b"x" * 5000)], tarfile.GNU_FORMAT)
    with pytest.raises(CorruptTarError, match="ends inside member"):
        list(iter_members(PieceReader([raw[:3000]]), lambda m: True, "validation.tar.gz"))


def test_member_checker_accepts_only_the_archive_layout() -> None:
    from oiv4.archives.tarstream import TarMember

    def member(name: str, kind: str = "file", size: int = 10) -> TarMember:
        return TarMember(0, name, name.encode(), kind, size, "", 0, 0)

    check = MemberChecker("train_b", max_member_bytes=100)
    assert check.check(member("train_b/b123456789abcdef.jpg")).outcome is None
    assert check.check(member("train_b/b123456789abcdef.jpg")).reason.startswith("duplicate member")
    assert "not train_b/<16 lowercase hex>.jpg" in check.check(member("train_b/B123456789ABCDEF.jpg")).reason
    assert "not train_b/<16 lowercase hex>.jpg" in check.check(member("train_b/b123456789abcdef.png")).reason
    assert "not train_b/<16 lowercase hex>.jpg" in check.check(member("train_c/b123456789abcdef.jpg")).reason
    assert "absolute path" in check.check(member("C:\\x.jpg")).reason
    assert "control or non-UTF-8" in check.check(member("train_b/\x1b[31m.jpg")).reason
    assert "exceeds the member cap" in check.check(member("train_b/bb23456789abcdef.jpg", size=101)).reason
    assert check.is_own_dir(member("train_b/", "dir"))
    # `tar czf` run from inside the parent folder: a leading ./ is dropped, nothing else is forgiven
    dotted = check.check(member("./train_b/bc23456789abcdef.jpg"))
    assert dotted.outcome is None and dotted.name == "train_b/bc23456789abcdef.jpg"
    assert check.is_own_dir(member("./", "dir")) and check.is_own_dir(member("./train_b/", "dir"))
    assert "path traversal" in check.check(member("./../train_b/bd23456789abcdef.jpg")).reason


def test_jpeg_size_reads_the_frame_header() -> None:
    assert jpeg_size(jpeg(3, (77, 41))) == (77, 41)
    assert jpeg_size(b"\xff\xd8\xff\xda\x00\x02") is None
