"""verify's cheap checks (locations, sizes, orphans), vectorised over Arrow batches: no Python object per
ledger row. Reading the bytes is stages.verify.content's business."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import BadArchiveError, BadLocationError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.containers import BlobReader, Member
from oiv4.io.inventory import Inventory
from oiv4.io.locations import (
    certainly_valid,
    is_member_location,
    member_location,
    parse_location,
    split_locations,
    staged_paths,
)
from oiv4.io.storage import Storage
from oiv4.stages.verify.findings import EXAMPLES_PER_KIND, Problem, SetCheck


@dataclass
class _Stored:
    """Everything on disk for a set as parallel arrays: key (file path or `container:member`) -> size."""

    keys: pa.Array
    sizes: np.ndarray
    referenced: np.ndarray
    containers: dict[str, dict[str, Member] | str]  # container -> member index, or why it is unreadable
    staging: bool  # any staged images (a shard not yet packed)


def index_stored(blobs: BlobReader, inv: Inventory, check: SetCheck) -> _Stored:
    keys, sizes = list(inv.files), list(inv.files.values())
    containers: dict[str, dict[str, Member] | str] = {}
    for container in sorted(inv.containers):
        try:
            containers[container] = idx = blobs.index(container)
        except BadArchiveError as exc:
            containers[container] = str(exc)
            check.add("bad_archive", None, str(exc), container)
            continue
        keys += [member_location(container, m) for m in idx]
        sizes += [m.size for m in idx.values()]
    staging_root = LAYOUT.staging_root(check.image_set) + "/"
    staging = any(k.startswith(staging_root) for k in inv.files)
    arr = pa.array(keys, pa.string())
    return _Stored(arr, np.array(sizes, dtype=np.int64), np.zeros(len(keys), dtype=bool), containers, staging)


def _lookup(stored: _Stored, keys: pa.Array) -> np.ndarray:
    """Position of each key in the inventory, -1 where absent."""
    if not len(stored.keys) or not len(keys):
        return np.full(len(keys), -1, dtype=np.int64)
    return pc.index_in(keys, value_set=stored.keys).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


# Kept long: vectorised over a batch of rows; each step narrows the same arrays (positions, sizes, containers)
# that the next one reads, so pieces would hand half a dozen parallel arrays back and forth.
def check_rows(storage: Storage, image_set: ImageSet, check: SetCheck, ok: pa.Table, stored: _Stored) -> pa.Table:
    """Check a batch of ok rows against what is stored; returns the rows that passed (for deep checks)."""
    loc = ok["location"].combine_chunks() if ok.num_rows else pa.array([], pa.string())
    no_loc = pc.is_null(loc)
    check.add("bad_location", ok.filter(no_loc), "ok row has no location")
    safe = certainly_valid(loc)
    odd = np.flatnonzero(~safe.to_numpy(zero_copy_only=False) & ~no_loc.to_numpy(zero_copy_only=False))
    valid = safe.to_numpy(zero_copy_only=False).copy()
    for i in odd:  # rare: let the one parser decide, with its own words
        try:
            parse_location(loc[i].as_py())
            valid[i] = True
        except BadLocationError as exc:
            check.add("bad_location", ok.slice(int(i), 1), str(exc))
    rows, loc = ok.filter(pa.array(valid)), loc.filter(pa.array(valid))
    pos = _lookup(stored, loc)
    container, _member = split_locations(loc)
    in_container = pc.is_valid(container).to_numpy(zero_copy_only=False)
    is_tar = pc.fill_null(pc.ends_with(container, ".tar"), False).to_numpy(zero_copy_only=False)
    retry = np.flatnonzero((pos < 0) & is_tar)  # a webdataset sample key: its image is the `.jpg` member
    if len(retry):
        pos[retry] = _lookup(stored, pc.binary_join_element_wise(loc.take(pa.array(retry)), ".jpg", ""))
    size = np.where(pos >= 0, stored.sizes[np.maximum(pos, 0)] if len(stored.sizes) else 0, -1)
    for i in np.flatnonzero((pos < 0) & ~in_container & ~pc.ends_with(loc, ".jpg").to_numpy(zero_copy_only=False)):
        if storage.exists(loc[i].as_py()):  # a location the inventory does not list (not a .jpg)
            size[i] = storage.size(loc[i].as_py())
    staged_ok = np.zeros(len(loc), dtype=bool)
    if stored.staging and len(loc):
        # Its shard has not packed its archive yet (killed or still running): fetch resumes it.
        staged = staged_paths(image_set, rows["shard"].combine_chunks(), rows["image_id"].combine_chunks())
        spos = _lookup(stored, staged)
        hit = np.flatnonzero((spos >= 0) & in_container)
        reason = _why_absent(stored, container, loc, pos)
        detail = pc.binary_join_element_wise("in ", staged, ", not yet packed into ", container, " (", reason, ")", "")
        check.add("staged", rows.take(pa.array(hit)), detail.take(pa.array(hit)))
        stored.referenced[spos[hit]] = True
        size[hit], staged_ok[hit] = stored.sizes[spos[hit]], True
    found = (pos >= 0) | staged_ok | (size >= 0)
    stored.referenced[pos[pos >= 0]] = True
    absent = np.flatnonzero(~found)
    if len(absent):
        reason = _why_absent(stored, container, loc, pos).take(pa.array(absent))
        unreadable = pc.starts_with(reason, "archive unreadable").to_numpy(zero_copy_only=False)
        for kind, sel in (("bad_archive", absent[unreadable]), ("missing", absent[~unreadable])):
            check.add(
                kind,
                rows.take(pa.array(sel)),
                reason.filter(pa.array(unreadable if kind == "bad_archive" else ~unreadable)),
            )
    ledger_size = (
        rows["stored_bytes"].combine_chunks().fill_null(-1).to_numpy(zero_copy_only=False) if len(loc) else size
    )
    wrong = found & (ledger_size >= 0) & (size != ledger_size)
    bad = np.flatnonzero(wrong)
    if len(bad):
        detail = pc.binary_join_element_wise(
            pa.array(size[bad]).cast(pa.string()),
            " bytes stored, ledger says ",
            pa.array(ledger_size[bad]).cast(pa.string()),
            "",
        )
        check.add("size_mismatch", rows.take(pa.array(bad)), detail)
    if staged_ok.any():  # deep checks read a staged image from where it is staged
        at = rows.schema.get_field_index("location")
        rows = rows.set_column(at, "location", pc.if_else(pa.array(staged_ok), staged, rows["location"]))
    return rows.filter(pa.array(found & ~wrong))


def _why_absent(stored: _Stored, container: pa.Array, loc: pa.Array, pos: np.ndarray) -> pa.Array:
    """A sentence per row saying why its location is not stored (meaningful where `pos` < 0)."""
    names = pa.array(list(stored.containers), pa.string())
    errors = pa.array([v if isinstance(v, str) else None for v in stored.containers.values()], pa.string())
    state = pc.index_in(container, value_set=names).fill_null(-1).to_numpy(zero_copy_only=False)
    known = state >= 0
    err = errors.take(pa.array(np.maximum(state, 0))) if len(names) else pa.nulls(len(loc), pa.string())
    _container, member = split_locations(loc)
    no_member = pc.binary_join_element_wise("no member '", member, "' in ", container, "")
    in_known = pc.if_else(pc.is_null(err), no_member, pc.binary_join_element_wise("archive unreadable: ", err, ""))
    out = pc.if_else(pa.array(known), in_known, pc.binary_join_element_wise("archive ", container, " is missing", ""))
    return pc.if_else(pc.is_null(container), pa.scalar("file is missing"), out)


def orphans(check: SetCheck, stored: _Stored, not_ok: list[pa.Table], inv: Inventory) -> None:
    keys = stored.keys
    unref = np.flatnonzero(~stored.referenced)
    if len(unref):
        cand = keys.take(pa.array(unref))
        is_member = is_member_location(cand)
        # A webdataset sidecar (<id>.json) of a referenced image is not an orphan.
        stem = pc.replace_substring_regex(cand, "\\.[^./:]*$", "")
        sidecar = ~pc.ends_with(cand, ".jpg").to_numpy(zero_copy_only=False) & is_member
        jpg_pos = _lookup(stored, pc.binary_join_element_wise(stem, ".jpg", ""))
        sidecar &= (jpg_pos >= 0) & stored.referenced[np.maximum(jpg_pos, 0)]
        orphans = cand.filter(pa.array(~sidecar))
        ids = pc.replace_substring_regex(pc.replace_substring_regex(orphans, "^.*/", ""), "\\.[^.]*$", "")
        failed = (
            pa.concat_tables(not_ok)
            if not_ok
            else pa.table({"image_id": pa.array([], pa.string()), "outcome": pa.array([], pa.string())})
        )
        at = pc.index_in(ids, value_set=failed["image_id"])
        outcome = failed["outcome"].take(at)
        why = pc.if_else(
            pc.is_null(outcome),
            pa.scalar("no ledger row points at it"),
            pc.binary_join_element_wise("ledger outcome is ", outcome, ", not ok", ""),
        )
        check.counts["orphan"] += len(orphans)
        for i in range(min(len(orphans), EXAMPLES_PER_KIND)):
            check.problems.append(Problem(check.image_set, "orphan", orphans[i].as_py(), why[i].as_py()))
    for rel in inv.temp:
        check.add("stray_temp", None, "temp file left by an interrupted write (safe to delete)", rel)
