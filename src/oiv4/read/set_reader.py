"""One set's stored images by ImageID, over any layout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import BadArchiveError, CorruptImageError, ImageNotFoundError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import LEDGER_SCHEMA, ImageSet, Outcome, is_valid_image_id
from oiv4.contracts.vectors import DEFAULT_MODEL
from oiv4.io.containers import BlobReader
from oiv4.io.damage import find_damage_in_root, is_read_error
from oiv4.io.image_decode import decode
from oiv4.io.inventory import inventory_ledger
from oiv4.io.ledger import has_ledger, iter_ledger, read_ledger
from oiv4.io.locations import Location, parse_location, staged_path
from oiv4.io.manifest import plan_rows, read_plan
from oiv4.io.sql import attach_filesystem, ledger_relation, plan_relation
from oiv4.io.storage import Storage
from oiv4.read import filters as view
from oiv4.read.failed_rows import FailedRows
from oiv4.read.filters import ImageFilter
from oiv4.read.held_out import DuplicatesOf
from oiv4.read.id_index import IdIndex
from oiv4.read.show import showable
from oiv4.read.torch_adapter import TorchImageDataset

if TYPE_CHECKING:
    import duckdb
    from PIL import Image

    from oiv4.read.features import Features


# --------------------------------------------------------------------------------------------------
# the public API


#: Ledger columns the reader keeps in memory for every set (the manifest reads the rest on demand).
READER_COLUMNS = ("image_id", "shard", "row", "outcome", "location", "stored_bytes", "started_at")
#: Kept for failed rows only, to say why an ImageID is not stored; its reason is read from its one shard when asked
#: (the set's reasons, one per row and mostly unique, would be the biggest column read).
NOT_OK_COLUMNS = ("image_id", "shard", "row", "outcome")
#: Sets with more plan rows than this get a lazy `.manifest` (a DuckDB relation) instead of a pa.Table.
EAGER_MANIFEST_ROWS = 2_000_000


class SetReader:
    """One set's stored images: `len()`, `ids()`, `[image_id]`, iteration in plan order, `.manifest`.

    Only images whose latest ledger outcome is `ok` are part of the set as read; everything planned is
    in `.manifest` with its outcome and reason. Loading is lazy: nothing is read until first use.
    """

    def __init__(
        self,
        storage: Storage,
        image_set: ImageSet | str,
        blobs: BlobReader | None = None,
        *,
        eager_manifest_rows: int = EAGER_MANIFEST_ROWS,
        filters: tuple[ImageFilter, ...] = (),
    ) -> None:
        self.storage = storage
        #: Applied in turn to the stored images (`oiv4.read.filters`); empty for the set as stored.
        self.filters = filters
        self.image_set = ImageSet(image_set)
        self.blobs = blobs or BlobReader(storage)
        self.eager_manifest_rows = eager_manifest_rows
        self._ok: pa.Table | None = None
        self._index: IdIndex | None = None
        self._not_ok: pa.Table | None = None
        self._not_ok_index: IdIndex | None = None
        self._has_ledger: bool | None = None
        self._failures = FailedRows(storage, self.image_set)

    def __repr__(self) -> str:
        if self.filters:
            what = " ".join(f.describe() for f in self.filters)
            return f"<oiv4 set {self.name!r} {what}: {len(self)} images ({len(self.dropped_ids)} dropped)>"
        return f"<oiv4 set {self.image_set.value!r}: {len(self)} images, layout {self.layout}>"

    def __getstate__(self) -> dict[str, Any]:
        # The in-memory ledger travels (cheap Arrow buffers); the ID index is rebuilt on demand.
        state = dict(self.__dict__)
        state["_index"] = None
        state["_not_ok_index"] = None
        state["_failures"] = FailedRows(self.storage, self.image_set)
        return state

    # loading -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.image_set.value

    @property
    def has_ledger(self) -> bool:
        """False for sets built without a ledger (their images are found from the files present)."""
        if self._has_ledger is None:
            self._has_ledger = has_ledger(self.storage, self.image_set)
        return self._has_ledger

    def _load(self) -> pa.Table:
        if self._ok is None:
            if self.has_ledger:
                ok, self._not_ok = self._split_ledger()
            else:
                ok = inventory_ledger(self.storage, self.blobs, self.image_set, read_plan(self.storage, self.image_set))
                ok = ok.combine_chunks()
            self._ok = view.keep(ok, self.filters)
        return self._ok

    def _split_ledger(self) -> tuple[pa.Table, pa.Table]:
        """(ok rows with READER_COLUMNS, failed rows with NOT_OK_COLUMNS), both in plan order, batch by batch."""
        cols = tuple(dict.fromkeys(READER_COLUMNS + NOT_OK_COLUMNS))
        oks, fails = [], []
        for batch in iter_ledger(self.storage, self.image_set, cols):
            is_ok = pc.equal(batch["outcome"], Outcome.ok.value)
            if pc.all(is_ok).as_py() is not False:  # the common case for archive sets: nothing to drop
                oks.append(batch.select(list(READER_COLUMNS)))
            else:
                oks.append(batch.filter(is_ok).select(list(READER_COLUMNS)))
                fails.append(batch.filter(pc.invert(is_ok)).select(list(NOT_OK_COLUMNS)))
        empty = LEDGER_SCHEMA.empty_table()
        ok = _by_row(pa.concat_tables(oks) if oks else empty.select(list(READER_COLUMNS)))
        not_ok = _by_row(pa.concat_tables(fails) if fails else empty.select(list(NOT_OK_COLUMNS)))
        # Left chunked (one chunk per batch of shards): combining would copy a 6M-row set once more.
        return ok, not_ok

    def _position(self, image_id: str) -> int:
        if self._ok is None and self.has_ledger:
            found = self._failures.from_footers(image_id)
            if found is not None:  # a failed ID, explained without loading the set's ok rows
                raise ImageNotFoundError(self._failure_message(image_id, *found))
        if self._index is None:
            self._index = IdIndex(self._load()["image_id"])
        pos = self._index.find(image_id)
        if pos is None:
            raise ImageNotFoundError(self._why_missing(image_id))
        return pos

    def _failure_message(self, image_id: str, outcome: str, reason: str | None) -> str:
        return f"{image_id} is not stored in {self.name}: outcome {outcome} ({reason or 'no reason recorded'})"

    def _why_missing(self, image_id: str) -> str:
        if not is_valid_image_id(image_id):
            return f"{image_id!r} is not an ImageID (16 lowercase hex characters)"
        dropped = view.why_dropped(image_id, self.filters)
        if dropped is not None:
            return f"{image_id} is left out of {self.name}: {dropped}"
        self._load()
        if self._not_ok is not None and self._not_ok.num_rows:
            if self._not_ok_index is None:  # built once: later lookups are a binary search
                self._not_ok_index = IdIndex(self._not_ok["image_id"])
            pos = self._not_ok_index.find(image_id)
            if pos is not None:
                outcome = self._not_ok["outcome"][pos].as_py()
                reason = self._failures.reason_at(self._not_ok["shard"][pos].as_py(), self._not_ok["row"][pos].as_py())
                return self._failure_message(image_id, outcome, reason)
        return f"{image_id} is not in set {self.name}"

    # the set as a collection -----------------------------------------------------------------
    def __len__(self) -> int:
        return self._load().num_rows

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and self._index_find(image_id) is not None

    def _index_find(self, image_id: str) -> int | None:
        if self._index is None:
            self._index = IdIndex(self._load()["image_id"])
        return self._index.find(image_id)

    def ids(self) -> list[str]:
        """ImageIDs of the stored images, in plan order."""
        return self._load()["image_id"].to_pylist()

    def location(self, image_id: str) -> Location:
        """Where `image_id` is stored (file path, or container and member)."""
        return parse_location(self._location_at(self._position(image_id)))

    def _location_at(self, pos: int) -> str:
        ok = self._load()
        loc = ok["location"][pos].as_py()
        if loc is None:  # an ok row without a location: the seed layout is the only sane guess
            return LAYOUT.image(self.image_set, ok["image_id"][pos].as_py())
        return loc

    def read_bytes(self, image_id: str) -> bytes:
        """The stored JPEG bytes of `image_id`; raises ImageNotFoundError or CorruptImageError."""
        return self._read_pos(self._position(image_id))

    def _read_pos(self, pos: int) -> bytes:
        ok = self._load()
        return self.read_stored(ok["image_id"][pos].as_py(), self._location_at(pos), ok["shard"][pos].as_py())

    def read_stored(self, image_id: str, location: str | None, shard: int) -> bytes:
        """The bytes of an ok ledger row given its `location` and `shard` (e.g. from a query over the ledger),
        without loading the set; raises CorruptImageError or BadArchiveError."""
        loc = parse_location(location or LAYOUT.image(self.image_set, image_id))
        try:
            return self.blobs.read(loc)
        except (CorruptImageError, BadArchiveError):
            if loc.container is None:
                raise
            # A shard that has not finished yet keeps its images staged beside the archive it will pack.
            staged = staged_path(self.image_set, shard, image_id)
            if staged is None or not self.storage.exists(staged):
                raise
            return self.storage.read_bytes(staged)

    def read_bytes_at(self, position: int) -> bytes:
        """Bytes of the `position`-th stored image in plan order (what a PyTorch Dataset indexes by)."""
        n = len(self)
        if not -n <= position < n:
            raise IndexError(f"position {position} out of range for {n} images")
        return self._read_pos(position % n)

    def image_id_at(self, position: int) -> str:
        return self._load()["image_id"][position].as_py()

    def __getitem__(self, key: str | int) -> Image.Image:
        """`reader[image_id]` (or `reader[position]`) -> the decoded PIL image."""
        data = self.read_bytes_at(key) if isinstance(key, int) else self.read_bytes(key)
        return showable(decode(data, str(key)))

    def get(self, image_id: str, default: Any = None) -> Image.Image | Any:
        try:
            return self[image_id]
        except ImageNotFoundError:
            return default

    def __iter__(self) -> Iterator[tuple[str, Image.Image]]:
        """(image_id, PIL image) pairs in plan order."""
        for pos, image_id in enumerate(self.ids()):
            yield image_id, showable(decode(self.read_bytes_at(pos), image_id))

    def iter_bytes(self) -> Iterator[tuple[str, bytes]]:
        """(image_id, JPEG bytes) pairs in plan order, without decoding."""
        for pos, image_id in enumerate(self.ids()):
            yield image_id, self.read_bytes_at(pos)

    @property
    def layout(self) -> str:
        """How this set is stored: "folder", "zip", "tar", a mix ("folder+zip"), or "empty"."""
        ok = self._load()
        if ok.num_rows == 0:
            return "empty"
        locs = ok["location"]
        kinds = set()
        is_zip = pc.match_substring(locs, ".zip:")
        is_tar = pc.match_substring(locs, ".tar:")
        if pc.any(is_zip).as_py():
            kinds.add("zip")
        if pc.any(is_tar).as_py():
            kinds.add("tar")
        if pc.any(pc.invert(pc.or_(is_zip, is_tar))).as_py():
            kinds.add("folder")
        return "+".join(k for k in ("folder", "zip", "tar") if k in kinds)

    # the manifest ------------------------------------------------------------------------------
    @property
    def ledger(self) -> pa.Table:
        """Every ledger row of the set (latest per manifest row, all columns), sorted by `row`."""
        return read_ledger(self.storage, self.image_set)

    @property
    def manifest(self) -> pa.Table | duckdb.DuckDBPyRelation:
        """The plan's rows (all 12 metadata columns + `row`) joined with their ledger outcome, in plan order.

        Rows not yet finished have a null `outcome`. Query it with DuckDB: `duckdb.sql("... FROM m")`.
        A pa.Table up to `eager_manifest_rows` plan rows; above that (extended_targets, targets) the lazy
        `manifest_relation()`, so opening it costs nothing; `.to_arrow_table()` materialises it.
        """
        if not self.has_ledger:
            return self._manifest_without_ledger()
        n = plan_rows(self.storage, self.image_set)
        if n is not None and n > self.eager_manifest_rows:
            return self.manifest_relation()
        import duckdb

        con = duckdb.connect()
        try:
            return self.manifest_relation(con).to_arrow_table()
        except duckdb.Error as exc:  # a page DuckDB could not read: name the damaged file if one is
            damage = find_damage_in_root(self.storage) if is_read_error(exc) else None
            if damage is None:
                raise
            raise damage from exc
        finally:
            con.close()

    def manifest_relation(self, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyRelation:
        """The manifest as a lazy DuckDB relation on `con` (default: DuckDB's default connection, the one
        `duckdb.sql` uses). Nothing is read until it is queried; the ledger is resolved as `oiv4.io.ledger` does."""
        import duckdb

        con = con if con is not None else duckdb.default_connection()
        attach_filesystem(con, self.storage)
        led = ledger_relation(con, self.storage, self.image_set)
        extra = ", ".join(f'l."{c}"' for c in led.columns if c not in ("image_id", "set", "row"))
        if not self.storage.exists(LAYOUT.plan(self.image_set)):
            return self._with_reasons(con, led.order('"row"'))
        plan = plan_relation(con, self.storage, self.image_set)  # noqa: F841 - read by name below
        joined = con.sql(f'SELECT p.*, {extra} FROM plan p LEFT JOIN led l USING ("row") ORDER BY p."row"')
        return self._with_reasons(con, joined)

    def _with_reasons(self, con: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
        """`rel` plus the filters' `dropped` column: why a row is left out of this view, null otherwise."""
        if not self.filters:
            return rel
        key = view.id_column(rel.columns)
        return rel.join(con.from_arrow(view.reasons(key, self.filters)), key, how="left").order('"row"')

    def _manifest_without_ledger(self) -> pa.Table:
        import duckdb

        ledger = self._load()
        con = duckdb.connect()
        con.register("l", ledger)
        extra = [c for c in ledger.column_names if c not in ("image_id", "set", "row")]
        plan = read_plan(self.storage, self.image_set)
        if plan is None:
            return self._with_reasons(con, con.sql('SELECT * FROM l ORDER BY "row"')).to_arrow_table()
        con.register("p", plan)
        sel = ", ".join(f'l."{c}"' for c in extra)
        joined = con.sql(f'SELECT p.*, {sel} FROM p LEFT JOIN l USING ("row") ORDER BY p."row"')
        return self._with_reasons(con, joined).to_arrow_table()

    def without_duplicates_of(self, *sets: str) -> SetReader:
        """This view without the images `oiv4 dedup` found duplicating an image of `sets` (see `oiv4.read.held_out`)."""
        return self.filtered(DuplicatesOf(self.storage, self.name, sets))

    def filtered(self, image_filter: ImageFilter) -> SetReader:
        """A new view: this one's images that `image_filter` keeps too (`oiv4.read.filters`)."""
        return SetReader(
            self.storage,
            self.image_set,
            self.blobs,
            eager_manifest_rows=self.eager_manifest_rows,
            filters=(*self.filters, image_filter),
        )

    @property
    def excluded(self) -> pa.Table:
        """One row per image this view's filters leave out, with why (for duplicates: image_id, duplicate_of,
        duplicate_set, distance, kind, closest first); empty for the set as stored."""
        return view.excluded(self.filters)

    @property
    def dropped_ids(self) -> list[str]:
        """ImageIDs this view's filters leave out, sorted."""
        return sorted(view.dropped_ids(self.filters))

    # adapters ------------------------------------------------------------------------------
    def torch(
        self,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        with_ids: bool = False,
        to_tensor: bool = False,
        features: str | None = None,
    ) -> TorchImageDataset:
        """A PyTorch map-style Dataset over this set; see `oiv4.read.torch_adapter` (torch stays optional)."""
        return TorchImageDataset(self, transform=transform, with_ids=with_ids, to_tensor=to_tensor, features=features)

    def features(self, model: str = DEFAULT_MODEL) -> Features:
        """This set's `model` vectors (ids + memory-mapped array in plan order); see `oiv4.read.features`."""
        from oiv4.read.features import Features

        return Features(self.storage, model, self.name)

    def close(self) -> None:
        self.blobs.close()


def _by_row(table: pa.Table) -> pa.Table:
    rows = table["row"]
    if len(rows) > 1 and not pc.all(pc.greater(rows[1:], rows[:-1])).as_py():
        table = table.take(pc.sort_indices(rows))
    return table
