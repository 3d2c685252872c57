"""The pieces under the archive stage: gzip decoding edge cases, the tar reader, member checks."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile

import pytest

from oiv4.contracts.errors import CorruptStreamError, CorruptTarError
from oiv4.io.containers import index_zip
from oiv4.stages.archives.gunzip import decode
from oiv4.stages.archives.members import MemberChecker, jpeg_size
from oiv4.stages.archives.tarstream import PieceReader, iter_members
from oiv4.stages.archives.zipwriter import StoredZipWriter
from support.archives import jpeg


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
    from oiv4.stages.archives.tarstream import TarMember

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


def _read_zip(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # every CRC checks out
        return {i.filename: zf.read(i) for i in zf.infolist()}


@pytest.mark.parametrize("force_zip64", [False, True])
def test_stored_zip_writer_output_reads_back_with_zipfile_and_the_oiv4_reader(tmp_path, force_zip64: bool) -> None:
    members = {f"train_0/{i:016x}.jpg": jpeg(i) for i in range(5)}
    path = tmp_path / "a.zip"
    with open(path, "wb") as fh:
        w = StoredZipWriter(fh, force_zip64=force_zip64)
        for k, (name, data) in enumerate(members.items()):
            w.add(name, [memoryview(data)[:10], memoryview(data)[10:]], mtime=1_525_132_800 + k * 2)
        w.close()
    assert _read_zip(path) == members
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[1]
        assert info.compress_type == zipfile.ZIP_STORED and info.date_time == (2018, 5, 1, 0, 0, 2)
        assert info.external_attr >> 16 == 0o100644
    data = path.read_bytes()
    index = index_zip(lambda o, n: data[o : o + n], len(data), "a.zip")
    assert sorted(index) == sorted(members)


def test_stored_zip_writer_switches_to_zip64_past_65535_entries(tmp_path) -> None:
    path = tmp_path / "many.zip"
    with open(path, "wb") as fh:
        w = StoredZipWriter(fh)
        for i in range(70_000):
            w.add(f"validation/{i:016x}.jpg", [b"x"])
        w.close()
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert len(names) == 70_000 and zf.read(names[-1]) == b"x"


_ZEROS = bytes(1 << 20)


class _SparseZeros(io.RawIOBase):
    """A file that turns writes of `_ZEROS` into holes, so a >4 GiB zip costs no disk and little time."""

    def __init__(self, fh) -> None:
        self.fh = fh

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if isinstance(b, memoryview) and b.obj is _ZEROS:
            self.fh.seek(len(b), 1)
        else:
            self.fh.write(b)
        return len(b)


def test_stored_zip_writer_records_offsets_beyond_4_gib(tmp_path) -> None:
    zeros = memoryview(_ZEROS)
    path = tmp_path / "big.zip"
    with open(path, "wb") as fh:
        w = StoredZipWriter(_SparseZeros(fh))
        w.add("train_0/0000000000000001.jpg", [zeros] * 2200)  # 2.3 GB of zeros, each
        w.add("train_0/0000000000000002.jpg", [zeros] * 2200)
        w.add("train_0/0000000000000003.jpg", [b"after 4 GiB"])
        w.close()
        fh.truncate()
    assert path.stat().st_size > 1 << 32
    with zipfile.ZipFile(path) as zf:
        last = zf.getinfo("train_0/0000000000000003.jpg")
        assert last.header_offset > 1 << 32 and zf.read(last) == b"after 4 GiB"
    with open(path, "rb") as fh:
        size = path.stat().st_size

        def read_at(o: int, n: int) -> bytes:
            fh.seek(o)
            return fh.read(n)

        assert index_zip(read_at, size, "big.zip")["train_0/0000000000000003.jpg"].offset == last.header_offset
