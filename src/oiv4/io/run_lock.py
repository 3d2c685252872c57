"""One run per root: a lock that names its holder, dies with it, and records a takeover.

Two runs writing the same root would not corrupt a file (every write is atomic) but would fetch the
same rows twice, race on ledger compaction and make `status` meaningless; a run left behind by a
killed parent is worse still. So every command that writes (metadata, plan, archives, fetch, build,
verify --requeue) holds this lock for its whole life.

- **Local and shared folders**: `flock` on `R/.oiv4-run.lock`. The kernel drops the lock when the
  holder dies, even by SIGKILL, so a dead owner can never block a new run; the file's content (owner,
  host, PID, command, start time) only serves the error message and the takeover record. This is the
  one file not written by temp-and-rename: the lock lives on the inode, so replacing it would break it.
- **Object stores** (`s3://...`) have no locks: a lease object `R/.oiv4-run.lock` with the same fields
  and an expiry that a heartbeat thread renews. A lease past its expiry belongs to a dead run and is
  taken over. Two runs starting within the same second can both write; the loser sees a foreign token
  when it reads the lease back and stops (the residual race is one PUT wide).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import secrets
import socket
import sys
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from oiv4.contracts.errors import RootLockedError
from oiv4.io.storage import Storage

LOCK_NAME = ".oiv4-run.lock"
#: How long a lease on an object store lives without renewal; renewed every third of it.
DEFAULT_LEASE_S = 90.0


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a root."""

    owner: str
    host: str
    pid: int
    command: str
    started_at: str
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    expires_at: str | None = None  # object stores only
    took_over_from: dict[str, Any] | None = None

    @classmethod
    def me(cls, command: str) -> LockHolder:
        try:
            owner = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers)
            owner = str(os.getuid())
        return cls(owner, socket.gethostname(), os.getpid(), command, datetime.now(UTC).isoformat(timespec="seconds"))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (user {self.owner}, `{self.command}`, since {self.started_at})"


def _parse(raw: bytes) -> LockHolder | None:
    try:
        data = json.loads(raw.decode())
        return LockHolder(**{k: data[k] for k in LockHolder.__dataclass_fields__ if k in data})
    except (ValueError, TypeError, KeyError):
        return None  # empty (released cleanly) or garbled: nobody to name


class RunLock:
    """`with RunLock(storage, "oiv4 fetch train"):` — refuses with RootLockedError while another run lives.

    `took_over` is set when the previous holder died without releasing (its record is kept in the lock
    as `took_over_from`, so the takeover stays visible to whoever reads it next).
    """

    def __init__(self, storage: Storage, command: str = "", *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.storage = storage
        self.holder = LockHolder.me(command or " ".join(["oiv4", *sys.argv[1:]]))
        self.lease_s = lease_s
        self.took_over: LockHolder | None = None
        #: The lock file to flock on this machine; None on an object store, which takes a renewed lease instead.
        self._path = storage.local_path(LOCK_NAME)
        self._fd: int | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- local ------------------------------------------------------------------------------
    def _acquire_local(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _parse(os.pread(fd, 1 << 16, 0))
            os.close(fd)
            who = other.describe() if other else "another process"
            raise RootLockedError(
                f"{self.storage.root} is in use by {who}; wait for it to finish or stop it, then run again"
            ) from None
        previous = _parse(os.pread(fd, 1 << 16, 0))
        if previous is not None:  # written and never cleared: its owner died holding it
            self.took_over = previous
            self.holder = LockHolder(**{**asdict(self.holder), "took_over_from": asdict(previous)})
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(self.holder)).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _release_local(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # empty = released cleanly; a non-empty unlocked file means a death
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    # -- object stores ----------------------------------------------------------------------
    def _lease(self) -> bytes:
        expires = datetime.now(UTC) + timedelta(seconds=self.lease_s)
        self.holder = LockHolder(**{**asdict(self.holder), "expires_at": expires.isoformat()})
        return json.dumps(asdict(self.holder)).encode()

    def _read_remote(self) -> LockHolder | None:
        try:
            return _parse(self.storage.read_bytes(LOCK_NAME))
        except FileNotFoundError:
            return None

    def _acquire_remote(self) -> None:
        current = self._read_remote()
        if current is not None and current.token != self.holder.token:
            expires = datetime.fromisoformat(current.expires_at) if current.expires_at else None
            if expires is not None and expires > datetime.now(UTC):
                raise RootLockedError(
                    f"{self.storage.root} is in use by {current.describe()} (lease until {current.expires_at}); "
                    "wait for it to finish or stop it, then run again"
                )
            self.took_over = current
            self.holder = LockHolder(**{**asdict(self.holder), "took_over_from": asdict(current)})
        self.storage.write_bytes(LOCK_NAME, self._lease())
        back = self._read_remote()
        if back is None or back.token != self.holder.token:
            who = back.describe() if back else "another run"
            raise RootLockedError(f"{self.storage.root} was taken at the same moment by {who}; run again later")
        self._heartbeat = threading.Thread(target=self._renew, name="oiv4-lock-heartbeat", daemon=True)
        self._heartbeat.start()

    def _renew(self) -> None:
        # A heartbeat, not a retry: one renewal per third of the lease, whatever the last one did.
        while not self._stop.wait(self.lease_s / 3):
            self._renew_once()

    def _renew_once(self) -> None:
        with contextlib.suppress(OSError):  # a missed renewal is survivable: the lease is three renewals long
            self.storage.write_bytes(LOCK_NAME, self._lease())

    def _release_remote(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        current = self._read_remote()
        if current is not None and current.token == self.holder.token:
            self.storage.remove(LOCK_NAME)

    # -- interface --------------------------------------------------------------------------
    def acquire(self) -> RunLock:
        if self._path is not None:
            self._acquire_local(self._path)
        else:
            self._acquire_remote()
        return self

    def release(self) -> None:
        if self._path is not None:
            self._release_local()
        else:
            self._release_remote()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(storage: Storage) -> LockHolder | None:
    """Who holds the root now, or None (for `oiv4 status`: 'a run is going: pid 123 on host')."""
    path = storage.local_path(LOCK_NAME)
    if path is not None:
        if not path.exists():
            return None
        fd = os.open(path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _parse(os.pread(fd, 1 << 16, 0))
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # nobody holds it (a dead owner's record is a takeover waiting to happen)
        finally:
            os.close(fd)
    holder = _parse(storage.read_bytes(LOCK_NAME)) if storage.exists(LOCK_NAME) else None
    if holder and holder.expires_at and datetime.fromisoformat(holder.expires_at) <= datetime.now(UTC):
        return None
    return holder
