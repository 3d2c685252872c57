"""Where archives come from: an S3 prefix (anonymous boto3), an https:// prefix, or a local folder.

Every source answers two questions: how big is `<name>` and what is its ETag (`stat`), and what are
bytes `[start, stop)` of it (`iter_range`). Ranged reads are conditional on the ETag seen at `stat`
(`If-Match`), so an object replaced mid-download fails loudly instead of splicing two versions.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from oiv4.contracts import errors
from oiv4.stages.archives.errors import SourceChangedError, SourceError

CVDF_S3 = "s3://open-images-dataset/tar/"
CVDF_HTTPS_HOST = "open-images-dataset.s3.amazonaws.com"
READ_CHUNK = 1 << 20


class TransientSourceError(errors.SourceError):
    """A failure worth retrying (connection reset, timeout, 5xx, short read)."""


@dataclass(frozen=True)
class RemoteObject:
    """One archive at a source, as `stat` saw it."""

    name: str
    url: str
    size: int
    etag: str | None

    @property
    def etag_md5(self) -> str | None:
        """The ETag when it is a plain MD5 of the content (single-part S3 uploads), else None."""
        e = (self.etag or "").strip('"').lower()
        if e.startswith("w/"):
            return None
        return e if len(e) == 32 and all(c in "0123456789abcdef" for c in e) else None


class Source(Protocol):
    description: str
    official: bool  # the real CVDF bucket: the published table is mandatory

    def stat(self, name: str) -> RemoteObject:
        """Size and ETag; raises SourceError, or TransientSourceError for a failure worth retrying."""
        ...

    def iter_range(self, obj: RemoteObject, start: int, stop: int) -> Iterator[bytes]: ...

    def local_path(self, name: str) -> Path | None: ...


# ---- S3 ------------------------------------------------------------------------------------------


class S3Source:
    """`s3://bucket/prefix/` read anonymously (`botocore.UNSIGNED`, us-east-1) with a real S3 client."""

    def __init__(self, url: str, endpoint_url: str | None = None, connections: int = 8, timeout_s: float = 120.0):
        from oiv4.contracts.extras import require

        require("boto3", "botocore", extra="s3", feature="an s3:// archive source")
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        rest = url[len("s3://") :]
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise ValueError(f"{url!r}: no bucket name")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.description = f"s3://{self.bucket}/{self.prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        self.official = self.bucket == "open-images-dataset" and endpoint_url is None
        config = Config(
            signature_version=UNSIGNED,
            region_name="us-east-1",
            max_pool_connections=max(10, connections + 2),
            # Our own part loop retries (and counts) failures; botocore's retries would hide them.
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=30,
            read_timeout=timeout_s,
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        # A private session: boto3's default session is module-global state shared between threads.
        self._client = boto3.session.Session().client(
            "s3", region_name="us-east-1", endpoint_url=endpoint_url, config=config
        )

    def _key(self, name: str) -> str:
        return self.prefix + name

    def local_path(self, name: str) -> Path | None:
        return None

    def _url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def _classify(self, name: str, exc: Exception) -> Exception:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("404", "NoSuchKey", "NotFound"):
                return SourceError(name, f"{self._url(name)} does not exist (404)")
            if code in ("403", "AccessDenied"):
                return SourceError(name, f"{self._url(name)}: access denied (403) to an anonymous request")
            if code in ("412", "PreconditionFailed"):
                return SourceChangedError(name, f"{self._url(name)} changed while downloading (ETag no longer matches)")
            if code == "NoSuchBucket":
                return SourceError(name, f"bucket {self.bucket!r} does not exist at {self.description}")
            if status >= 500 or status == 429 or code in ("SlowDown", "InternalError", "ServiceUnavailable"):
                return TransientSourceError(f"{self._url(name)}: {code or status}")
            return SourceError(name, f"{self._url(name)}: S3 error {code or status}: {exc}")
        if isinstance(exc, BotoCoreError | OSError):
            return TransientSourceError(f"{self._url(name)}: {exc}")
        return exc

    def stat(self, name: str) -> RemoteObject:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            err = self._classify(name, exc)
            raise err from exc  # TransientSourceError: the caller retries
        return RemoteObject(name, self._url(name), int(head["ContentLength"]), head.get("ETag"))

    def iter_range(self, obj: RemoteObject, start: int, stop: int) -> Iterator[bytes]:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(obj.name),
            "Range": f"bytes={start}-{stop - 1}",
        }
        if obj.etag:
            kwargs["IfMatch"] = obj.etag
        try:
            resp = self._client.get_object(**kwargs)
            if obj.etag and resp.get("ETag") and resp["ETag"] != obj.etag:
                raise SourceChangedError(
                    obj.name, f"{obj.url} changed while downloading (ETag {resp['ETag']}, was {obj.etag})"
                )
            got = 0
            for chunk in resp["Body"].iter_chunks(READ_CHUNK):
                got += len(chunk)
                if got > stop - start:  # never hand on bytes beyond the asked range
                    raise TransientSourceError(f"{obj.url}: more bytes than the {stop - start} asked at {start}")
                yield chunk
        except Exception as exc:
            raise self._classify(obj.name, exc) from exc
        if got != stop - start:
            raise TransientSourceError(f"{obj.url}: short read ({got} of {stop - start} bytes at {start})")


# ---- HTTP(S) -------------------------------------------------------------------------------------


class HttpSource:
    """`https://host/prefix/`: HEAD for size and ETag, `Range` + `If-Match` GETs for the parts."""

    def __init__(self, base_url: str, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.description = self.base_url
        self.official = urllib.parse.urlsplit(self.base_url).hostname == CVDF_HTTPS_HOST

    def _url(self, name: str) -> str:
        return self.base_url + name

    def _fail(self, name: str, exc: Exception) -> Exception:
        if isinstance(exc, urllib.error.HTTPError):
            if exc.code == 404:
                return SourceError(name, f"{self._url(name)} does not exist (HTTP 404)")
            if exc.code == 412:
                return SourceChangedError(name, f"{self._url(name)} changed while downloading (ETag no longer matches)")
            if exc.code >= 500 or exc.code in (408, 429):
                return TransientSourceError(f"{self._url(name)}: HTTP {exc.code}")
            return SourceError(name, f"{self._url(name)}: HTTP {exc.code} {exc.reason}")
        if isinstance(exc, OSError):  # URLError, timeouts, resets
            return TransientSourceError(f"{self._url(name)}: {exc}")
        return exc

    def stat(self, name: str) -> RemoteObject:
        req = urllib.request.Request(self._url(name), method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                length = resp.headers.get("Content-Length")
                etag = resp.headers.get("ETag")
        except Exception as exc:
            err = self._fail(name, exc)
            raise err from exc  # TransientSourceError: the caller retries
        if length is None or not length.isdigit():
            raise SourceError(name, f"{self._url(name)}: the server sends no Content-Length; cannot plan a download")
        return RemoteObject(name, self._url(name), int(length), etag)

    def iter_range(self, obj: RemoteObject, start: int, stop: int) -> Iterator[bytes]:
        headers = {"Range": f"bytes={start}-{stop - 1}", "Accept-Encoding": "identity"}
        if obj.etag:
            headers["If-Match"] = obj.etag
        req = urllib.request.Request(obj.url, headers=headers)
        got = 0
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                whole = start == 0 and stop == obj.size
                if resp.status == 200 and not whole:
                    raise SourceError(
                        obj.name, f"{obj.url}: the server ignores Range requests; cannot download in parts"
                    )
                etag = resp.headers.get("ETag")
                if obj.etag and etag and etag != obj.etag:  # for servers that ignore If-Match
                    raise SourceChangedError(
                        obj.name, f"{obj.url} changed while downloading (ETag {etag}, was {obj.etag})"
                    )
                crange = resp.headers.get("Content-Range", "")
                if resp.status == 206 and not crange.startswith(f"bytes {start}-{stop - 1}/"):
                    raise TransientSourceError(
                        f"{obj.url}: asked bytes {start}-{stop - 1}, got Content-Range {crange!r}"
                    )
                while got < stop - start:
                    chunk = resp.read(min(READ_CHUNK, stop - start - got))
                    if not chunk:
                        break
                    got += len(chunk)
                    yield chunk
        except (SourceError, TransientSourceError):  # SourceChangedError is a SourceError
            raise
        except Exception as exc:
            raise self._fail(obj.name, exc) from exc
        if got != stop - start:
            raise TransientSourceError(f"{obj.url}: short read ({got} of {stop - start} bytes at {start})")

    def local_path(self, name: str) -> Path | None:
        return None


# ---- local folder --------------------------------------------------------------------------------


class LocalSource:
    """A folder that already holds the archives: read in place, never copied, moved or deleted."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser().absolute()
        if not self.folder.is_dir():
            raise ValueError(f"source {str(folder)!r} is neither s3://, http(s):// nor an existing folder")
        self.description = str(self.folder)
        self.official = False

    def local_path(self, name: str) -> Path | None:
        return self.folder / name

    def stat(self, name: str) -> RemoteObject:
        p = self.folder / name
        if not p.is_file():
            raise SourceError(name, f"{p} does not exist")
        return RemoteObject(name, str(p), p.stat().st_size, None)

    def iter_range(self, obj: RemoteObject, start: int, stop: int) -> Iterator[bytes]:
        with open(obj.url, "rb") as fh:
            fh.seek(start)
            left = stop - start
            while left:
                chunk = fh.read(min(READ_CHUNK, left))
                if not chunk:
                    raise SourceError(obj.name, f"{obj.url} is shorter than {stop} bytes (truncated?)")
                left -= len(chunk)
                yield chunk


def make_source(source: str, s3_endpoint: str | None = None, connections: int = 8, timeout_s: float = 120.0) -> Source:
    """`s3://bucket/prefix/`, `http(s)://host/prefix/` or a local folder."""
    if source.startswith("s3://"):
        return S3Source(source, endpoint_url=s3_endpoint, connections=connections, timeout_s=timeout_s)
    if s3_endpoint:
        raise ValueError("--s3-endpoint only applies to an s3:// source")
    if source.startswith(("http://", "https://")):
        return HttpSource(source, timeout_s=timeout_s)
    return LocalSource(source)
