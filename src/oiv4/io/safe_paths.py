"""Filesystem guard: nothing is ever written outside the output root, not via `..`, hostile names or symlinks.

Why: a symlinked prefix folder inside the root (`train/images/ab -> /etc`) was followed and files were written
outside the root. Checking a path string is not enough (the string `train/images/ab/x.jpg` is innocent), and
checking with `realpath` then opening by path leaves a window in which a folder can be swapped for a symlink.

How: `open_atomic_under` walks the relative path one component at a time with `os.open(..., O_NOFOLLOW |
O_DIRECTORY, dir_fd=parent)` (openat), creating missing folders with `mkdir(dir_fd=...)`. Each step holds a file
descriptor of a real directory, so a component swapped for a symlink after we opened it cannot redirect us: the
kernel refuses to follow a symlink at any step (ELOOP/ENOTDIR -> `UnsafePath`). The file is written to a temp
name created with O_EXCL | O_NOFOLLOW in the final directory and renamed with `os.replace(..., dir_fd)`, which
replaces a directory entry and never follows a symlink at the destination; an existing symlink at the final name
is refused up front as well, so it is reported rather than silently replaced.

Residual risk (documented, accepted): the root itself is opened by path and may be a symlink (the user chose it);
a hostile process with write access inside the root can still *move* a real directory we hold open to elsewhere
on the same filesystem between our walk and the rename -- that needs local write access to the output, which
is outside the threat model (untrusted input is the CSV and HTTP bodies, not local users). POSIX only (dir_fd).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from oiv4.contracts.errors import UnsafePath

#: The mark in every temp name (`<final>.oiv4tmp-<pid>-<random>`): what `io.temps` looks for to sweep a killed
#: writer's leftovers, and the pid it checks before removing one.
TMP_MARK = ".oiv4tmp-"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def split_relative(rel: str) -> list[str]:
    """The components of a layout path, refusing anything that could leave the root by name alone."""
    if not isinstance(rel, str) or not rel:
        raise UnsafePath(f"empty path {rel!r}")
    bad = next((c for c in ("\0", "\\") if c in rel), None)
    if bad is not None:
        raise UnsafePath(f"path {rel!r} contains {'a NUL byte' if bad == chr(0) else 'a backslash'}")
    if any(ord(c) < 32 for c in rel):
        raise UnsafePath(f"path {rel!r} contains a control character")
    if rel.startswith("/"):
        raise UnsafePath(f"path {rel!r} is absolute")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePath(f"path {rel!r} has a {part or 'empty'!r} component")
    return parts


def _open_dir(parent_fd: int, name: str, rel: str, create: bool) -> int:
    """openat(parent, name) as a directory, refusing symlinks; creates it when missing and `create`."""
    for _ in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            with suppress(FileExistsError):  # another worker made it between our open and mkdir: open it again
                os.mkdir(name, 0o777, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(
                    f"{rel}: {name!r} is a symlink or not a folder; refusing to write through it"
                ) from None
            raise
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


@contextmanager
def _dir_fd(root: Path, parts: list[str], rel: str, create: bool) -> Iterator[int]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for name in parts:
            nxt = _open_dir(fd, name, rel, create)
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _refuse_symlink_leaf(dfd: int, name: str, rel: str) -> None:
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{rel}: the target is a symlink; refusing to replace or follow it")
    if stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{rel}: the target is a folder")


def safe_target(root: str | os.PathLike[str], rel: str) -> Path:
    """`root/rel` after checking that no existing component between root and target is a symlink.

    A check only (it cannot stop a later swap); write through `open_atomic_under` to be safe against that too.
    """
    parts = split_relative(rel)
    try:
        with _dir_fd(Path(root), parts[:-1], rel, create=False) as dfd:
            _refuse_symlink_leaf(dfd, parts[-1], rel)
    except FileNotFoundError:
        pass  # a missing folder cannot be a symlink; open_atomic_under creates it safely
    return Path(root).joinpath(*parts)


@contextmanager
def open_atomic_under(root: str | os.PathLike[str], rel: str, *, fsync: bool = False) -> Iterator[IO[bytes]]:
    """A binary handle whose bytes appear at `root/rel` only when the block exits cleanly; never outside root."""
    parts = split_relative(rel)
    with _dir_fd(Path(root), parts[:-1], rel, create=True) as dfd:
        name = parts[-1]
        _refuse_symlink_leaf(dfd, name, rel)
        tmp = f"{name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666, dir_fd=dfd
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
