"""Ledger `location` strings: what they may name and how they parse (never outside the root)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from oiv4.contracts.errors import BadLocationError
from oiv4.contracts.schema import ImageSet, is_valid_image_id

# locations


@dataclass(frozen=True)
class Location:
    """Where one image's bytes live: a plain file (`container` None) or a member of a zip/tar."""

    path: str  # the file, or the member name inside `container`
    container: str | None = None

    @property
    def kind(self) -> str:
        """ "file", "zip" or "tar"."""
        if self.container is None:
            return "file"
        return "zip" if self.container.endswith(".zip") else "tar"

    def __str__(self) -> str:
        return self.path if self.container is None else f"{self.container}:{self.path}"


def _is_plain_relpath(rel: str) -> bool:
    # Ledger locations are joined to the root: refuse anything that could step outside it.
    return (
        bool(rel)
        and not rel.startswith("/")
        and "\\" not in rel
        and "" not in (parts := rel.split("/"))
        and (".." not in parts)
    )


@functools.lru_cache(maxsize=4096)
def _is_container(container: str) -> bool:
    # Millions of rows share a few hundred containers: check each once.
    return _is_plain_relpath(container)


def _check_relpath(rel: str, original: str, *, container: bool = False) -> None:
    if not (_is_container(rel) if container else _is_plain_relpath(rel)):
        raise BadLocationError(f"refusing location {original!r}: not a plain relative path under the root")


def parse_location(location: str) -> Location:
    """Parse a ledger `location`: `a/b/<id>.jpg`, `x.zip:<member>` or `x.tar:<member>`."""
    if not isinstance(location, str):
        raise BadLocationError(f"location must be a string, got {location!r}")
    container, sep, member = location.partition(":")
    if not sep:
        _check_relpath(location, location)
        return Location(location)
    _check_relpath(container, location, container=True)
    if not member or member.startswith("/") or ".." in member.split("/"):
        raise BadLocationError(f"refusing location {location!r}: bad member name")
    if not (container.endswith(".zip") or container.endswith(".tar")):
        raise BadLocationError(
            f"location {location!r}: container must be a .zip or an uncompressed .tar (random access)"
        )
    return Location(member, container)


def staged_path(image_set: ImageSet | str, shard: int | None, image_id: str) -> str | None:
    """Where the fetch stage stages a finished image until its shard's zip/tar is packed.

    Mirrors `store._ArchiveWriter.staged_path` (a test keeps the two equal); spelled out here because
    verify asks for it once per row and building a writer per row would dominate its run time.
    """
    if shard is None or not is_valid_image_id(image_id):
        return None
    return f"{ImageSet(image_set).value}/staging/shard-{int(shard):05d}/{image_id}.jpg"
