"""Up-front checks of a root, so a bad one is a one-line usage error before any work starts.

`writable_root` is for commands that write: a local root must be a folder this process can
write in (probed with a real temp file: permission bits do not tell about read-only mounts; a root that
cannot be written is a storage error, exit 5, like a full disk, not a usage error); an object
store root must answer a cheap listing (else missing credentials would surface as a 90-line traceback from
deep inside a worker). `built_root` is for commands that only read a built root (status, verify,
report): a missing folder, or one that holds nothing oiv4 wrote, is an error rather than "not started".
`new_or_built_root` is for the commands that start a root (metadata, build, demo): a missing or empty
folder is accepted (and created), a folder holding anything else than oiv4's own files is refused.
All checks only look; none of them creates a file or a folder (`writable_root`'s probe is removed again).
"""

from __future__ import annotations

import os
import tempfile

from oiv4.contracts.errors import MissingExtraError, RootError, UnwritableRootError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.storage import Storage


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _reachable(storage: Storage) -> bool:
    """True when the object store answers; whether the root prefix exists yet. RootError if it cannot be reached."""
    try:
        return bool(storage.fs.exists(storage.root))
    except MissingExtraError:
        raise  # the install hint alone: nothing about credentials applies
    except Exception as exc:
        raise RootError(
            f"cannot reach {storage.root} ({_first_line(exc)}); check the credentials (e.g. AWS_PROFILE, "
            "AWS_ACCESS_KEY_ID) and the endpoint"
        ) from None


def named_root(root: str, what: str = "--root") -> Storage:
    """The Storage for a `--root` value; an empty value is a usage error (it would silently mean the current folder)."""
    if not str(root).strip():
        raise RootError(f"{what} is empty: name the folder (use . for the current one)")
    return Storage(root)


def writable_root(storage: Storage, what: str = "--root", *, create: bool = False) -> None:
    """Raise RootError (usage) for a root that is not a folder, UnwritableRootError (storage) for one that
    cannot be written. A missing local folder is an error, unless `create` (then it is made).

    `what` names the folder in the message (the option it came from).
    """
    path = storage.local_path("")
    if path is None:  # an object store: a prefix needs no creating, only an answer
        _reachable(storage)
        return
    if path.exists() and not path.is_dir():
        raise RootError(f"{what} {storage.root} is a file, not a folder")
    if not path.exists() and not create:
        raise RootError(f"{what} {storage.root} does not exist")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".oiv4-probe-", dir=path)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UnwritableRootError(
            f"cannot write to {what} {storage.root}: {reason} (read-only, or not yours?)"
        ) from None


def _markers() -> list[str]:
    """What oiv4 writes under a root: any one of them marks a folder as an oiv4 root."""
    written = (
        LAYOUT.plan_summary(),
        LAYOUT.metadata(""),
        LAYOUT.ledger_dir("train"),
        LAYOUT.features_dir("vgg16-fc2", "train"),
        LAYOUT.neighbors_dir("vgg16-fc2"),
    )
    folders = {p.split("/", 1)[0] for p in written}
    return [*sorted(folders), *(s.value for s in ImageSet)]


#: Files oiv4 leaves at the top of a root it started (the run lock) or that a viewer leaves in any folder.
_OWN_FILES = {".oiv4-run.lock", ".DS_Store"}


def new_or_built_root(storage: Storage) -> None:
    """Raise RootError unless `storage` is missing, empty, or already an oiv4 root: the commands that start a root
    (metadata, build, demo) never write into a folder that holds someone else's files."""
    path = storage.local_path("")
    if path is not None:
        if not path.exists():
            return
        if not path.is_dir():
            raise RootError(f"--root {storage.root} is a file, not a folder")
        names = {p.name for p in path.iterdir()}
    else:
        if not _reachable(storage):
            return
        names = {str(p).rstrip("/").rsplit("/", 1)[-1] for p in storage.fs.ls(storage.root, detail=False)}
    if not names - _OWN_FILES or names & set(_markers()):
        return
    shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
    raise RootError(
        f"--root {storage.root} holds other files ({shown}) and is not an oiv4 root: "
        "name a new or empty folder (it is created), or an existing oiv4 root"
    )


def built_root(storage: Storage) -> None:
    """Raise RootError unless `storage` is an oiv4 root (plan/, metadata/, ledger/ or a set folder)."""
    path = storage.local_path("")
    if path is not None:
        if not path.exists():
            raise RootError(f"--root {storage.root} does not exist")
        if not path.is_dir():
            raise RootError(f"--root {storage.root} is a file, not a folder")
    elif not _reachable(storage):
        raise RootError(f"--root {storage.root} does not exist")
    if not any(storage.exists(m) for m in _markers()):
        raise RootError(
            f"--root {storage.root} is not an oiv4 root (no plan/, metadata/, ledger/, features/ or set folder): "
            "start with `oiv4 build`, or `oiv4 metadata` then `oiv4 plan`"
        )
