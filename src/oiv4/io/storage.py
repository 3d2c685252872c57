"""Atomic writes to a root that may be a local folder or any fsspec URL (s3://bucket/prefix).

The one rule of the project lives here: nothing appears at a final path until it is complete.
Locally that is write-to-temp-then-rename in the same directory; on object stores a single PUT
is already all-or-nothing, so the object is written directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".oiv4tmp-"


def is_remote(root: str | os.PathLike[str]) -> bool:
    return "://" in str(root) and not str(root).startswith("file://")


@dataclass
class Storage:
    """A root plus the filesystem behind it. Picklable, so it can travel to pool or Dask workers."""

    root: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        root = str(self.root)
        if root.startswith("file://"):
            root = root[len("file://") :]
        if not is_remote(root):
            root = str(Path(root).expanduser().absolute())
        self.root = root.rstrip("/") or "/"

    @property
    def local(self) -> bool:
        return not is_remote(self.root)

    @property
    def fs(self) -> Any:
        import fsspec

        if self.root.split("://", 1)[0] in ("s3", "s3a"):
            from oiv4.contracts.extras import require

            require("s3fs", extra="s3", feature="an s3:// root")
        # No listings cache: other processes and machines (pool or Dask workers) write under the same root,
        # so a cached listing would hide new ledger parts from resume/status or show removed ones.
        # Callers can still opt in by passing use_listings_cache in storage_options.
        fs, _ = fsspec.core.url_to_fs(self.root, **{"use_listings_cache": False, **self.storage_options})
        return fs

    def path(self, rel: str) -> str:
        """Full path or URL of `rel` under the root."""
        return f"{self.root}/{rel}"

    def local_path(self, rel: str) -> Path:
        if not self.local:
            raise ValueError(f"{self.root} is not a local folder")
        return Path(self.root) / rel

    # -- writes -----------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes, *, fsync: bool = False) -> None:
        """Write `data` at `rel` atomically: readers see the old state or the whole new file."""
        if self.local:
            with self._local_atomic(rel, fsync) as fh:
                fh.write(data)
        else:
            self.fs.pipe_file(self.path(rel), data)

    @contextmanager
    def _local_atomic(self, rel: str, fsync: bool) -> Iterator[IO[bytes]]:
        """Temp file beside the target (same filesystem, so the rename is atomic), renamed on success.

        Written through `safe_paths.open_atomic_under`: folders are walked and created with openat and
        O_NOFOLLOW, so nothing is ever written outside the root -- not through a symlinked folder at any level,
        not over a symlink at the final name, not via `..` or hostile names (raises `UnsafePath`).
        """
        # Imported here: safe_paths imports TMP_MARK from this module (one temp marker for cleanup to find).
        from oiv4.io.safe_paths import open_atomic_under

        if not os.path.isdir(self.root):
            Path(self.root).mkdir(parents=True, exist_ok=True)
        with open_atomic_under(self.root, rel, fsync=fsync) as fh:
            yield fh

    @contextmanager
    def open_atomic(self, rel: str) -> Iterator[IO[bytes]]:
        """A binary file handle whose content appears at `rel` only when the block exits cleanly."""
        if self.local:
            with self._local_atomic(rel, fsync=True) as fh:
                yield fh
        else:
            # The object appears when the writer is closed (one PUT, or completing the multipart upload).
            # fsspec's `with fs.open(...)` closes -- and so publishes -- even when the block raised, so on
            # error discard instead: that aborts a started multipart upload and never PUTs the partial bytes.
            fh = self.fs.open(self.path(rel), "wb")
            try:
                yield fh
            except BaseException:
                if hasattr(fh, "discard"):  # fsspec's buffered writers (s3, gcs, abfs)
                    fh.discard()
                    fh.closed = True  # close() would now publish; the writer is finished without it
                else:
                    fh.close()
                raise
            fh.close()

    # -- reads ------------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        if self.local:
            return self.local_path(rel).exists()
        return bool(self.fs.exists(self.path(rel)))

    def read_bytes(self, rel: str) -> bytes:
        if self.local:
            return self.local_path(rel).read_bytes()
        return bytes(self.fs.cat_file(self.path(rel)))

    def size(self, rel: str) -> int:
        if self.local:
            return self.local_path(rel).stat().st_size
        return int(self.fs.size(self.path(rel)))

    def open(self, rel: str, mode: str = "rb") -> IO[bytes]:
        if self.local:
            return open(self.local_path(rel), mode)
        return self.fs.open(self.path(rel), mode)

    def glob(self, pattern: str) -> list[str]:
        """Relative paths under the root matching `pattern`, sorted."""
        if self.local:
            base = Path(self.root)
            return sorted(p.relative_to(base).as_posix() for p in base.glob(pattern))
        import re

        from fsspec.utils import glob_translate

        # One flat listing under the pattern's literal leading folders, matched here. fsspec's own glob
        # lists folder by folder and fails when one vanishes meanwhile (a finishing shard removing its
        # ledger parts while `oiv4 status` reads); a flat listing is also far fewer requests.
        base = self.fs._strip_protocol(self.root).rstrip("/")
        literal: list[str] = []
        for segment in pattern.split("/")[:-1]:
            if any(c in segment for c in "*?["):
                break
            literal.append(segment)
        matcher = re.compile(glob_translate(f"{base}/{pattern}"))
        listed = self.fs.find("/".join([base, *literal]), withdirs=True)
        return sorted(name[len(base) + 1 :] for name in listed if matcher.match(name))

    def remove(self, rel: str) -> None:
        if self.local:
            p = self.local_path(rel)
            if p.is_dir():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        elif self.fs.exists(self.path(rel)):
            self.fs.rm(self.path(rel), recursive=True)

    def sync(self) -> None:
        """Make everything written so far durable (a reboot must not leave a renamed-but-empty file)."""
        if self.local:
            os.sync()
