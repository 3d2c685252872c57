"""Helpers for the archive tests: real JPEGs, real tar.gz archives (hostile ones too), plans, servers."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import random
import socket
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import COLUMNS, MANIFEST_SCHEMA, ImageSet
from oiv4.io.storage import Storage


def jpeg(seed: int, size: tuple[int, int] = (48, 32)) -> bytes:
    """A small real JPEG, different per seed."""
    rnd = random.Random(seed)
    img = Image.new("RGB", size, (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    for _ in range(6):
        x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
        img.putpixel((x, y), (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def noisy_jpeg(seed: int, size: tuple[int, int] = (256, 256)) -> bytes:
    """A JPEG of noise: big for its size and incompressible, like a real photo in a tar.gz."""
    rnd = random.Random(seed)
    img = Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def image_ids(n: int, digit: str | None = None, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        i = (digit or "") + "".join(rnd.choice("0123456789abcdef") for _ in range(16 - len(digit or "")))
        if i not in out:
            out.append(i)
    return out


@dataclass
class Entry:
    """One tar member: a regular file by default, or kind = symlink/hardlink/chardev/fifo/dir."""

    name: str
    data: bytes = b""
    kind: str = "file"
    linkname: str = ""


@dataclass
class Archive:
    name: str  # train_3.tar.gz
    data: bytes
    entries: list[Entry] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


_TYPES = {
    "file": tarfile.REGTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "dir": tarfile.DIRTYPE,
}


def make_archive(stem: str, entries: list[Entry], with_dir: bool = True) -> Archive:
    """A .tar.gz the way CVDF's look: `<stem>/` then `<stem>/<id>.jpg` members."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        if with_dir:
            d = tarfile.TarInfo(stem)
            d.type = tarfile.DIRTYPE
            d.mode = 0o755
            tf.addfile(d)
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = _TYPES[e.kind]
            ti.linkname = e.linkname
            ti.mtime = 1_500_000_000
            ti.mode = 0o644
            if e.kind == "file":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    data = gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)
    return Archive(f"{stem}.tar.gz", data, entries)


def images_archive(stem: str, ids: list[str], seed: int = 0, noisy: bool = False) -> Archive:
    make = noisy_jpeg if noisy else jpeg
    return make_archive(stem, [Entry(f"{stem}/{i}.jpg", make(seed + k)) for k, i in enumerate(ids)])


def write_plan(storage: Storage, image_set: ImageSet | str, ids: list[str]) -> None:
    """plan/<set>.parquet as the plan stage writes it (12 columns + row), with placeholder metadata."""
    n = len(ids)
    cols: dict[str, pa.Array] = {}
    for c in COLUMNS:
        if c == "ImageID":
            cols[c] = pa.array(ids, pa.string())
        elif c == "Subset":
            cols[c] = pa.array(["validation" if ImageSet(image_set) == ImageSet.validation else "train"] * n)
        elif c == "OriginalSize":
            cols[c] = pa.array([1000] * n, pa.int64())
        elif c == "Rotation":
            cols[c] = pa.array([0.0] * n, pa.float64())
        else:
            cols[c] = pa.array([""] * n, pa.string())
    cols["row"] = pa.array(range(n), pa.int64())
    table = pa.table(cols).cast(MANIFEST_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(LAYOUT.plan(image_set), sink.getvalue().to_pybytes())


# ---- servers ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def upload(endpoint: str, bucket: str, prefix: str, archives: list[Archive]) -> None:
    """Create the bucket (if needed) and put the archives, with the dummy credentials moto accepts.

    Objects are public-read, like the CVDF bucket's: anonymous (unsigned) reads are then allowed.
    """
    import boto3

    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket, ACL="public-read")
    for a in archives:
        s3.put_object(Bucket=bucket, Key=f"{prefix}{a.name}", Body=a.data, ACL="public-read")


class RangeServer:
    """A small HTTP server for a folder of files, honouring Range/If-Match, counting bytes served.

    `stall_after_requests=N` makes every GET after the first N hang until `release()` (or stop): a
    download can then be killed at a known point. HEAD requests are never stalled.
    """

    def __init__(
        self, files: dict[str, bytes], stall_after_requests: int | None = None, head_sizes: dict[str, int] | None = None
    ) -> None:
        self.files = files
        self.stall_after = stall_after_requests
        self.head_sizes = head_sizes or {}  # lie about these sizes in HEAD answers
        self.gets = 0
        self.bytes_served = 0
        self.lock = threading.Lock()
        self.released = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _lookup(self) -> tuple[bytes, str] | None:
                data = outer.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return data, '"' + hashlib.md5(data).hexdigest() + '"'

            def do_HEAD(self) -> None:
                found = self._lookup()
                if found:
                    self.send_response(200)
                    size = outer.head_sizes.get(self.path.rsplit("/", 1)[-1], len(found[0]))
                    self.send_header("Content-Length", str(size))
                    self.send_header("ETag", found[1])
                    self.send_header("Accept-Ranges", "bytes")
                    self.end_headers()

            def do_GET(self) -> None:
                found = self._lookup()
                if not found:
                    return
                data, etag = found
                with outer.lock:
                    outer.gets += 1
                    n = outer.gets
                if outer.stall_after is not None and n > outer.stall_after:
                    outer.released.wait(60)
                if self.headers.get("If-Match") not in (None, etag):
                    self.send_response(412)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                rng = self.headers.get("Range")
                start, stop = 0, len(data)
                if rng:
                    a, b = rng.removeprefix("bytes=").split("-")
                    start, stop = int(a), int(b) + 1
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(stop - start))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(data[start:stop])
                with outer.lock:
                    outer.bytes_served += stop - start

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/tar/"

    def __enter__(self) -> RangeServer:
        self.files = {f"tar/{k}": v for k, v in self.files.items()}
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*")}
