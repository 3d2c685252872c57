"""Where archives come from: an S3 prefix (anonymous s3fs), an https:// prefix, or a local folder.

Every source answers two questions: how big is `<name>` and what is its ETag (`stat`), and what are
bytes `[start, stop)` of it (`iter_range`, on a reader opened inside the event loop that transfers).
Ranged reads are conditional on the ETag seen at `stat` (`If-Match`), so an object replaced
mid-download fails loudly instead of splicing two versions. Failures are sorted as everywhere else
(`oiv4.io.retry`): transient ones are retried by the shared policy, the rest end the archive at once.
"""

from __future__ import annotations

import asyncio
import os
import threading
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from oiv4.contracts.errors import ChangedError, NotFoundError, SettingError, TransferError, TransientError
from oiv4.contracts.extras import require
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.http import HttpRanges, classify, make_session
from oiv4.io.ranged import RangeReader, RemoteObject

CVDF_S3 = "s3://open-images-dataset/tar/"
CVDF_HTTPS_HOST = "open-images-dataset.s3.amazonaws.com"
READ_CHUNK = 1 << 20

__all__ = ["CVDF_S3", "HttpSource", "LocalSource", "RemoteObject", "S3Source", "Source", "make_source"]


class SourceReader(RangeReader, Protocol):
    async def stat(self, name: str) -> RemoteObject:
        """Size and ETag; raises `TransferError` (`TransientError` for a failure worth retrying)."""
        ...


class Source(Protocol):
    description: str
    official: bool  # the real CVDF bucket: the published table is mandatory

    def open(self) -> AbstractAsyncContextManager[SourceReader]:
        """A reader with its own connections, bound to the running event loop."""
        ...

    def local_path(self, name: str) -> Path | None: ...


# ---- S3 ------------------------------------------------------------------------------------------


class S3Source:
    """`s3://bucket/prefix/` read anonymously (unsigned requests, us-east-1) through s3fs's S3 client."""

    def __init__(self, url: str, endpoint_url: str | None = None, transfer: TransferSettings | None = None):
        # Checked here, before any work, so a core install fails at once with the install hint.
        require("s3fs", "aiobotocore", "botocore", extra="s3", feature="an s3:// archive source")
        rest = url[len("s3://") :]
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise SettingError(f"{url!r}: no bucket name")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.transfer = transfer or TransferSettings()
        self.description = f"s3://{self.bucket}/{self.prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        self.official = self.bucket == "open-images-dataset" and endpoint_url is None
        # One botocore session for all readers of this source: a new one parses the S3 service model
        # again (~0.3 s of CPU per archive, measured). Client creation from it is serialised by the lock,
        # as botocore sessions are not thread-safe; the clients themselves are per event loop.
        self._session: Any = None
        self._lock = threading.Lock()

    def local_path(self, name: str) -> Path | None:
        return None

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    @asynccontextmanager
    async def open(self) -> AsyncIterator[SourceReader]:
        import s3fs
        from aiobotocore.session import AioSession

        with self._lock:
            if self._session is None:
                self._session = AioSession()
        fs = s3fs.S3FileSystem(
            anon=True,
            session=self._session,
            asynchronous=True,
            skip_instance_cache=True,  # an instance per loop: no cached client shared between threads
            client_kwargs={"endpoint_url": self.endpoint_url, "region_name": "us-east-1"},
            config_kwargs={
                "max_pool_connections": max(10, self.transfer.connections + 2),
                # The shared retry policy retries (and counts) failures; botocore's retries would hide them.
                "retries": {"max_attempts": 1, "mode": "standard"},
                "connect_timeout": self.transfer.connect_timeout_s,
                "read_timeout": self.transfer.read_timeout_s,
                "s3": {"addressing_style": "path"} if self.endpoint_url else {},
            },
        )
        # Held across the await: only other threads wait on it (each event loop opens one reader at a time).
        with self._lock:
            client = await fs.set_session()
        try:
            yield _S3Reader(self, client)
        finally:
            await client.close()


class _S3Reader:
    def __init__(self, source: S3Source, client: Any) -> None:
        self.source, self.client = source, client

    def _classify(self, name: str, exc: Exception) -> TransferError:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        url = self.source.url(name)
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("404", "NoSuchKey", "NotFound"):
                return NotFoundError(f"{url} does not exist (404)")
            if code in ("403", "AccessDenied"):
                return TransferError(f"{url}: access denied (403) to an anonymous request")
            if code in ("412", "PreconditionFailed"):
                return ChangedError(f"{url} changed while downloading (ETag no longer matches)")
            if code == "NoSuchBucket":
                return TransferError(f"bucket {self.source.bucket!r} does not exist at {self.source.description}")
            if status >= 500 or status == 429 or code in ("SlowDown", "InternalError", "ServiceUnavailable"):
                return TransientError(f"{url}: {code or status}")
            return TransferError(f"{url}: S3 error {code or status}: {exc}")
        if isinstance(exc, EndpointConnectionError) and exc.kwargs.get("error") is not None:
            return classify(url, exc.kwargs["error"])  # the aiohttp error underneath: refused, DNS, reset...
        if isinstance(exc, BotoCoreError):  # read/connect timeouts, streaming errors, short bodies
            return TransientError(f"{url}: {type(exc).__name__}: {exc}")
        return classify(url, exc)

    async def stat(self, name: str) -> RemoteObject:
        key = self.source.prefix + name
        try:
            head = await self.client.head_object(Bucket=self.source.bucket, Key=key)
        except Exception as exc:
            raise self._classify(name, exc) from exc
        return RemoteObject(
            name, self.source.url(name), int(head["ContentLength"]), head.get("ETag"), str(head.get("LastModified"))
        )

    async def iter_range(self, obj: RemoteObject, start: int, stop: int) -> AsyncIterator[bytes]:
        kwargs: dict[str, Any] = {
            "Bucket": self.source.bucket,
            "Key": self.source.prefix + obj.name,
            "Range": f"bytes={start}-{stop - 1}",
        }
        if obj.etag:
            kwargs["IfMatch"] = obj.etag
        got = 0
        try:
            resp = await self.client.get_object(**kwargs)
            if obj.etag and resp.get("ETag") and resp["ETag"] != obj.etag:
                raise ChangedError(f"{obj.url} changed while downloading (ETag {resp['ETag']}, was {obj.etag})")
            async with resp["Body"] as body:
                async for chunk in body.iter_chunks(READ_CHUNK):
                    got += len(chunk)
                    if got > stop - start:  # never hand on bytes beyond the asked range
                        raise TransientError(f"{obj.url}: more bytes than the {stop - start} asked at {start}")
                    yield chunk
        except TransferError:
            raise
        except Exception as exc:
            raise self._classify(obj.name, exc) from exc
        if got != stop - start:
            raise TransientError(f"{obj.url}: short read ({got} of {stop - start} bytes at {start})")


# ---- HTTP(S) -------------------------------------------------------------------------------------


class HttpSource:
    """`https://host/prefix/`: HEAD for size and ETag, `Range` + `If-Match` GETs for the parts."""

    def __init__(self, base_url: str, transfer: TransferSettings | None = None) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.transfer = transfer or TransferSettings()
        self.description = self.base_url
        try:
            self.official = urllib.parse.urlsplit(self.base_url).hostname == CVDF_HTTPS_HOST
        except ValueError as exc:  # urllib's word for a malformed URL ("Invalid IPv6 URL")
            raise SettingError(f"source {base_url!r}: {exc}") from None

    def local_path(self, name: str) -> Path | None:
        return None

    @asynccontextmanager
    async def open(self) -> AsyncIterator[SourceReader]:
        limit = max(10, self.transfer.connections + 2)
        async with make_session(self.transfer, limit=limit) as session:
            yield _HttpReader(HttpRanges(session), self.base_url)


class _HttpReader:
    def __init__(self, http: HttpRanges, base_url: str) -> None:
        self.http, self.base_url = http, base_url

    async def stat(self, name: str) -> RemoteObject:
        return await self.http.stat(self.base_url + name, name)

    def iter_range(self, obj: RemoteObject, start: int, stop: int) -> AsyncIterator[bytes]:
        return self.http.iter_range(obj, start, stop)


# ---- local folder --------------------------------------------------------------------------------


class LocalSource:
    """A folder that already holds the archives: read in place, never copied, moved or deleted."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser().absolute()
        if not self.folder.is_dir():
            raise SettingError(f"source {str(folder)!r} is neither s3://, http(s):// nor an existing folder")
        self.description = str(self.folder)
        self.official = False

    def local_path(self, name: str) -> Path | None:
        return self.folder / name

    @asynccontextmanager
    async def open(self) -> AsyncIterator[SourceReader]:
        yield self

    async def stat(self, name: str) -> RemoteObject:
        p = self.folder / name
        if not p.is_file():
            raise NotFoundError(f"{p} does not exist")
        return RemoteObject(name, str(p), p.stat().st_size, None)

    async def iter_range(self, obj: RemoteObject, start: int, stop: int) -> AsyncIterator[bytes]:
        with open(obj.url, "rb") as fh:
            fh.seek(start)
            left = stop - start
            while left:
                chunk = fh.read(min(READ_CHUNK, left))
                if not chunk:
                    raise TransferError(f"{obj.url} is shorter than {stop} bytes (truncated?)")
                left -= len(chunk)
                yield chunk
                await asyncio.sleep(0)  # a disk read never waits: let the other parts run


def make_source(source: str, s3_endpoint: str | None = None, transfer: TransferSettings | None = None) -> Source:
    """`s3://bucket/prefix/`, `http(s)://host/prefix/` or a local folder. `transfer`'s network guard and CA
    bundle apply to https sources; an s3:// source uses botocore's own connections (proxy variables honoured,
    not guarded: its endpoint comes from the user, never from a CSV) with `transfer`'s timeouts."""
    if source.startswith("s3://"):
        return S3Source(source, endpoint_url=s3_endpoint, transfer=transfer)
    if s3_endpoint:
        raise SettingError("--s3-endpoint only applies to an s3:// source")
    if source.startswith(("http://", "https://")):
        return HttpSource(source, transfer)
    return LocalSource(source)
