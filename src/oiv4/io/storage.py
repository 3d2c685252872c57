"""A root to read and write under: `Storage(root)` is a local folder (`LocalStorage`) or any fsspec URL such as
`s3://bucket/prefix` (`FsspecStorage`), the way fsspec has one abstract filesystem and one subclass per backend.

The one rule of the project lives here: nothing appears at a final path until it is complete.
Locally that is write-to-temp-then-rename in the same directory; on object stores a single PUT
is already all-or-nothing, so the object is written directly.

Code that needs something only one backend has asks the backend (`free_bytes`, `walk`, `attach_to`,
`local_path`, ...) instead of testing which backend it holds.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from oiv4.io.safe_paths import TMP_MARK, open_atomic_under, safe_target

if TYPE_CHECKING:
    import duckdb

__all__ = ["SPACE_ERRNOS", "TMP_MARK", "FsspecStorage", "LocalStorage", "Storage", "is_remote"]

#: The errnos of a write that means "no space left" (a full disk, a quota).
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_remote(root: str | os.PathLike[str]) -> bool:
    """Whether `root` names an fsspec URL other than `file://` (an object store or another remote filesystem)."""
    return "://" in str(root) and not str(root).startswith("file://")


@dataclass
class Storage(ABC):
    """A root plus the filesystem behind it. Picklable, so it can travel to pool or Dask workers.

    `Storage(root, storage_options)` returns the backend the root needs: `LocalStorage` for a folder (or
    `file://`), `FsspecStorage` for any other URL.
    """

    root: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: Whether every call is a network round trip (worth threads), not a local syscall of microseconds.
    round_trips: ClassVar[bool] = True

    def __new__(cls, *args: Any, **kwargs: Any) -> Storage:
        if cls is Storage:
            root = args[0] if args else kwargs.get("root", "")
            cls = FsspecStorage if is_remote(root) else LocalStorage
        return super().__new__(cls)

    @abstractmethod
    def __post_init__(self) -> None:
        """Each backend writes its root in one canonical form (equal roots compare equal)."""

    @property
    def fs(self) -> Any:
        """The fsspec filesystem behind the root."""
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

    def local_path(self, rel: str) -> Path | None:
        """`rel` as a file of this machine, or None where the root is not a local folder."""
        return None

    # -- writes -----------------------------------------------------------------------------
    @abstractmethod
    def write_bytes(self, rel: str, data: bytes, *, fsync: bool = False) -> None:
        """Write `data` at `rel` atomically: readers see the old state or the whole new file."""

    @abstractmethod
    def open_atomic(self, rel: str) -> AbstractContextManager[IO[bytes]]:
        """A binary file handle whose content appears at `rel` only when the block exits cleanly."""

    @abstractmethod
    def upload(self, src: Path, rel: str) -> None:
        """Copy the local file `src` to `rel`, atomically."""

    @abstractmethod
    def remove(self, rel: str) -> None:
        """Remove the file or folder `rel`; a missing one is not an error."""

    @abstractmethod
    def remove_empty_folder(self, rel: str) -> None:
        """Remove folder `rel` if it is empty (object stores have no empty folders)."""

    @abstractmethod
    def sync(self) -> None:
        """Make everything written so far durable (a reboot must not leave a renamed-but-empty file)."""

    # -- reads ------------------------------------------------------------------------------
    @abstractmethod
    def exists(self, rel: str) -> bool:
        """Whether `rel` exists."""

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes:
        """The whole content of `rel`."""

    @abstractmethod
    def read_range(self, rel: str, offset: int, length: int) -> bytes:
        """`length` bytes of `rel` from `offset` (fewer only at the end of the file)."""

    @abstractmethod
    def size(self, rel: str) -> int:
        """The size of `rel` in bytes."""

    @abstractmethod
    def open(self, rel: str, mode: str = "rb") -> IO[bytes]:
        """`rel` opened for reading (or writing in place, which only tests and tools use)."""

    @abstractmethod
    def glob(self, pattern: str) -> list[str]:
        """Relative paths under the root matching `pattern`, sorted."""

    @abstractmethod
    def walk(self, top: str) -> Iterator[tuple[str, int]]:
        """(relative path, size) of every file under folder `top` (nothing when it is missing)."""

    # -- what differs between a folder and an object store ---------------------------------------
    @abstractmethod
    def leftover_temps(self, pattern: str) -> list[str]:
        """Temp files (`TMP_MARK`) matching `pattern` that a killed writer may have left."""

    @abstractmethod
    def free_bytes(self, rel: str = "") -> int | None:
        """Free bytes on the disk that will hold `rel`; None where writing cannot fill a disk of ours."""

    @abstractmethod
    def within_root(self, rel: str) -> bool:
        """Whether `rel`, with any symlink on its way resolved, stays under the root."""

    @abstractmethod
    def refuse_symlinks(self, rel: str) -> None:
        """Raise `UnsafePath` if an existing component of `rel` is a symlink (reading it could leave the root)."""

    @abstractmethod
    def unreachable(self) -> str | None:
        """None when the root can be used from this machine, else why not (for a worker's pre-flight check)."""

    @abstractmethod
    def attach_to(self, con: duckdb.DuckDBPyConnection) -> None:
        """Let DuckDB on `con` read this root's paths."""


class LocalStorage(Storage):
    """A folder on this machine: temp file + rename through `safe_paths`, so nothing is written outside it."""

    round_trips: ClassVar[bool] = False

    def __post_init__(self) -> None:
        root = str(self.root)
        if root.startswith("file://"):
            root = root[len("file://") :]
        self.root = str(Path(root).expanduser().absolute()).rstrip("/") or "/"

    def local_path(self, rel: str) -> Path:
        """`rel` as a path of this machine's filesystem."""
        return Path(self.root) / rel

    @contextmanager
    def _atomic(self, rel: str, fsync: bool) -> Iterator[IO[bytes]]:
        """Temp file beside the target (same filesystem, so the rename is atomic), renamed on success.

        Written through `safe_paths.open_atomic_under`: folders are walked and created with openat and
        O_NOFOLLOW, so nothing is ever written outside the root -- not through a symlinked folder at any level,
        not over a symlink at the final name, not via `..` or hostile names (raises `UnsafePath`).
        """
        if not os.path.isdir(self.root):
            Path(self.root).mkdir(parents=True, exist_ok=True)
        with open_atomic_under(self.root, rel, fsync=fsync) as fh:
            yield fh

    def write_bytes(self, rel: str, data: bytes, *, fsync: bool = False) -> None:
        with self._atomic(rel, fsync) as fh:
            fh.write(data)

    @contextmanager
    def open_atomic(self, rel: str) -> Iterator[IO[bytes]]:
        with self._atomic(rel, fsync=True) as fh:
            yield fh

    def upload(self, src: Path, rel: str) -> None:
        with self._atomic(rel, fsync=True) as fh, open(src, "rb") as source:
            shutil.copyfileobj(source, fh, 1 << 20)

    def remove(self, rel: str) -> None:
        p = self.local_path(rel)
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)

    def remove_empty_folder(self, rel: str) -> None:
        with suppress(OSError):  # not empty (another shard still uses it) or already gone
            self.local_path(rel).rmdir()

    def sync(self) -> None:
        os.sync()

    def exists(self, rel: str) -> bool:
        return self.local_path(rel).exists()

    def read_bytes(self, rel: str) -> bytes:
        return self.local_path(rel).read_bytes()

    def read_range(self, rel: str, offset: int, length: int) -> bytes:
        with open(self.local_path(rel), "rb", buffering=0) as fh:
            fh.seek(offset)
            return fh.read(length)

    def size(self, rel: str) -> int:
        return self.local_path(rel).stat().st_size

    def open(self, rel: str, mode: str = "rb") -> IO[bytes]:
        return open(self.local_path(rel), mode)

    def glob(self, pattern: str) -> list[str]:
        base = Path(self.root)
        return sorted(p.relative_to(base).as_posix() for p in base.glob(pattern))

    def walk(self, top: str) -> Iterator[tuple[str, int]]:
        prefix = len(self.root) + 1
        for dirpath, _dirs, files in os.walk(self.local_path(top)):
            for f in files:
                full = os.path.join(dirpath, f)
                try:
                    yield full[prefix:].replace(os.sep, "/"), os.stat(full).st_size
                except FileNotFoundError:
                    continue  # removed while we walked (a writer's temp file being renamed)

    def leftover_temps(self, pattern: str) -> list[str]:
        return self.glob(pattern)

    def free_bytes(self, rel: str = "") -> int | None:
        path = self.local_path(rel)
        while not path.exists() and path != path.parent:  # the nearest existing ancestor holds it
            path = path.parent
        return shutil.disk_usage(path).free

    def within_root(self, rel: str) -> bool:
        return self.local_path(rel).resolve().is_relative_to(Path(self.root).resolve())

    def refuse_symlinks(self, rel: str) -> None:
        safe_target(self.root, rel)

    def unreachable(self) -> str | None:
        return None if os.path.isdir(self.root) else f"{self.root} is not a folder on this machine"

    def attach_to(self, con: duckdb.DuckDBPyConnection) -> None:
        """Nothing to do: DuckDB reads local paths itself."""


class FsspecStorage(Storage):
    """Any fsspec URL (`s3://bucket/prefix`, `memory://...`): one PUT per file, which is already atomic."""

    def __post_init__(self) -> None:
        self.root = str(self.root).rstrip("/") or "/"

    def write_bytes(self, rel: str, data: bytes, *, fsync: bool = False) -> None:
        self.fs.pipe_file(self.path(rel), data)

    @contextmanager
    def open_atomic(self, rel: str) -> Iterator[IO[bytes]]:
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

    def upload(self, src: Path, rel: str) -> None:
        self.fs.put_file(str(src), self.path(rel))

    def remove(self, rel: str) -> None:
        if self.fs.exists(self.path(rel)):
            self.fs.rm(self.path(rel), recursive=True)

    def remove_empty_folder(self, rel: str) -> None:
        """Nothing to do: a prefix with no objects under it does not exist."""

    def sync(self) -> None:
        """Nothing to do: an object is durable once its PUT returned."""

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def read_bytes(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self.path(rel)))

    def read_range(self, rel: str, offset: int, length: int) -> bytes:
        return bytes(self.fs.cat_file(self.path(rel), start=offset, end=offset + length))

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def open(self, rel: str, mode: str = "rb") -> IO[bytes]:
        return self.fs.open(self.path(rel), mode)

    def _base(self) -> str:
        return self.fs._strip_protocol(self.root).rstrip("/")

    def glob(self, pattern: str) -> list[str]:
        from fsspec.utils import glob_translate

        # One flat listing under the pattern's literal leading folders, matched here. fsspec's own glob
        # lists folder by folder and fails when one vanishes meanwhile (a finishing shard removing its
        # ledger parts while `oiv4 status` reads); a flat listing is also far fewer requests.
        base = self._base()
        literal: list[str] = []
        for segment in pattern.split("/")[:-1]:
            if any(c in segment for c in "*?["):
                break
            literal.append(segment)
        matcher = re.compile(glob_translate(f"{base}/{pattern}"))
        listed = self.fs.find("/".join([base, *literal]), withdirs=True)
        return sorted(name[len(base) + 1 :] for name in listed if matcher.match(name))

    def walk(self, top: str) -> Iterator[tuple[str, int]]:
        fs, root = self.fs, self._base()
        if not fs.exists(f"{root}/{top}"):
            return
        for path, info in sorted(fs.find(f"{root}/{top}", detail=True).items()):
            if info.get("type", "file") == "file":
                yield path[len(root) + 1 :], int(info.get("size") or 0)

    def leftover_temps(self, pattern: str) -> list[str]:
        return []  # every object is written by one PUT, never under a temp name

    def free_bytes(self, rel: str = "") -> int | None:
        return None

    def within_root(self, rel: str) -> bool:
        return True  # object stores have no symlinks; names were checked by the caller

    def refuse_symlinks(self, rel: str) -> None:
        """Nothing to refuse: object stores have no symlinks."""

    def unreachable(self) -> str | None:
        self.fs.ls(self._base())
        return None

    def attach_to(self, con: duckdb.DuckDBPyConnection) -> None:
        con.register_filesystem(self.fs)
