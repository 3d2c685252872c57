"""Ledger `location` strings: what they may name, how they are written and how they parse (never outside the root).

`Location` is the one formatter (`str(Location(member, container))`) and `parse_location` the one parser; verify's
vectorised checks split and pre-screen whole Arrow columns with `split_locations` and `certainly_valid`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import BadLocationError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet, is_valid_image_id

#: The separator between a container and its member in a location.
_SEP = ":"
#: Locations that certainly parse (plain relative segments, optional `.zip:`/`.tar:` member); others go through
#: `parse_location`, which knows every rule.
_PLAIN = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*"
_SAFE_LOCATION = f"^{_PLAIN}(\\.(zip|tar){_SEP}{_PLAIN})?$"


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
        return self.path if self.container is None else f"{self.container}{_SEP}{self.path}"


def member_location(container: str, member: str) -> str:
    """The location of `member` inside the zip or tar `container`."""
    return str(Location(member, container))


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
    container, sep, member = location.partition(_SEP)
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
    """Where the fetch stage stages a finished image until its shard's zip/tar is packed (None: it cannot be)."""
    if shard is None or not is_valid_image_id(image_id):
        return None
    return LAYOUT.staged_image(image_set, int(shard), image_id)


def staged_paths(image_set: ImageSet | str, shards: pa.Array, image_ids: pa.Array) -> pa.Array:
    """`staged_path` of whole columns (verify checks millions of rows): shard folders from LAYOUT, joined per row."""
    shard_ints = pc.fill_null(shards, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    wanted = np.unique(shard_ints)
    dirs = pa.array([LAYOUT.staging_dir(image_set, int(s)) for s in wanted], pa.string())
    return pc.binary_join_element_wise(
        dirs.take(pa.array(np.searchsorted(wanted, shard_ints))), "/", image_ids, ".jpg", ""
    )


def split_locations(locations: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(container, member) of each location: container null for a plain file, member the path or member name."""
    split = pc.split_pattern(locations, _SEP, max_splits=1)
    in_container = pc.equal(pc.list_value_length(split), 2)
    container = pc.if_else(in_container, pc.list_element(split, 0), pa.scalar(None, pa.string()))
    member = pc.if_else(in_container, pc.replace_substring_regex(locations, f"^[^{_SEP}]*{_SEP}", ""), locations)
    return container, member


def certainly_valid(locations: pa.Array) -> pa.Array:
    """True where a location certainly parses; false ones (and nulls) must go through `parse_location`."""
    return pc.fill_null(pc.match_substring_regex(locations, _SAFE_LOCATION), False)


def is_member_location(locations: pa.Array) -> np.ndarray:
    """Which locations name a member of a zip or tar."""
    zips = pc.match_substring(locations, f".zip{_SEP}").to_numpy(zero_copy_only=False)
    return zips | pc.match_substring(locations, f".tar{_SEP}").to_numpy(zero_copy_only=False)
