"""A ledger row is a typed `LedgerRow` whose fields are exactly `LEDGER_SCHEMA`'s columns; a misspelled field is
an error where the row is built or written, never a silently null column."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from oiv4.contracts.ledger_row import LedgerRow
from oiv4.contracts.schema import LEDGER_SCHEMA, REWRITE_OWNERS, ImageSet, Outcome
from oiv4.io.ledger import read_shard
from oiv4.io.ledger_write import LedgerBuffer, append_rows, append_table
from oiv4.io.storage import Storage


def _python_type(arrow: pa.DataType) -> type:
    if pa.types.is_string(arrow):
        return str
    if pa.types.is_integer(arrow):
        return int
    if pa.types.is_floating(arrow):
        return float
    if pa.types.is_timestamp(arrow):
        return datetime
    raise AssertionError(f"no Python type for {arrow}")


def mismatches(cls: type, schema: pa.Schema) -> list[str]:
    """Every way the dataclass `cls` and the Arrow `schema` disagree: names, order, types, nullability."""
    fields = dataclasses.fields(cls)
    hints = typing.get_type_hints(cls)
    found = []
    if [f.name for f in fields] != schema.names:
        found.append(f"fields {[f.name for f in fields]} != columns {schema.names}")
    for f in fields:
        if f.name not in schema.names:
            continue
        column = schema.field(f.name)
        want: object = _python_type(column.type)
        if column.nullable:
            want = want | None  # type: ignore[operator]
        if hints[f.name] != want:
            found.append(f"{f.name}: {hints[f.name]} != {want}")
        required = f.default is dataclasses.MISSING
        if required == column.nullable or (column.nullable and f.default is not None):
            found.append(f"{f.name}: required={required} but nullable={column.nullable}")
    return found


def test_ledger_row_fields_and_types_are_exactly_the_ledger_schema() -> None:
    assert mismatches(LedgerRow, LEDGER_SCHEMA) == []


def test_the_comparison_fails_when_either_side_gains_a_column() -> None:
    wider_schema = LEDGER_SCHEMA.append(pa.field("colour", pa.string()))
    assert any("colour" in m for m in mismatches(LedgerRow, wider_schema))

    @dataclasses.dataclass(frozen=True)
    class Wider(LedgerRow):  # type: ignore[misc]
        colour: str | None = None

    assert any("colour" in m for m in mismatches(Wider, LEDGER_SCHEMA))
    narrower = pa.schema([f for f in LEDGER_SCHEMA if f.name != "phash"] + [pa.field("phash", pa.float64())])
    assert mismatches(LedgerRow, narrower)  # same names, one type changed (and the order)
    loose = LEDGER_SCHEMA.set(0, pa.field("image_id", pa.string(), nullable=True))
    assert any("image_id" in m for m in mismatches(LedgerRow, loose))


def test_a_row_is_frozen_and_refuses_unknown_fields() -> None:
    row = LedgerRow(image_id="0" * 16, set="train", shard=0, row=0, outcome=Outcome.ok)
    assert type(row.outcome) is str and row.outcome == "ok"  # plain strings in the ledger, not enum members
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.reason = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        LedgerRow(image_id="0" * 16, set="train", shard=0, row=0, outcome="ok", reasn="typo")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="reasn"):
        LedgerRow.from_mapping(
            {"image_id": "0" * 16, "set": "train", "shard": 0, "row": 0, "outcome": "ok", "reasn": 1}
        )


def test_a_stage_rewriting_a_row_may_change_only_the_columns_it_owns() -> None:
    row = LedgerRow(image_id="0" * 16, set="train", shard=0, row=0, outcome="ok", reason="stored")
    assert row.rewritten("hash", phash=7).phash == 7
    with pytest.raises(TypeError, match="reason"):
        row.rewritten("hash", phash=7, reason="hashed")
    assert "outcome" not in REWRITE_OWNERS["hash"]
    requeued = row.rewritten("verify_requeue", outcome="verify_failed")
    assert (requeued.outcome, requeued.reason) == ("verify_failed", "stored")


def test_the_ledger_writer_refuses_a_misspelled_field_and_writes_nothing(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    good = {"image_id": "0" * 16, "row": 0, "outcome": "ok", "reason": "stored"}
    with pytest.raises(TypeError, match="stored_bytez"):
        append_rows(storage, ImageSet.train, 0, [good, {**good, "row": 1, "stored_bytez": 5}])
    buffer = LedgerBuffer(storage, ImageSet.train, 0)
    with pytest.raises(TypeError, match="locaton"):
        buffer.record(**good, locaton="a.jpg")
    table = pa.Table.from_pylist([{**good, "set": "train", "shard": 0, "colour": "red"}])
    with pytest.raises(TypeError, match="colour"):
        append_table(storage, ImageSet.train, 0, table)
    assert read_shard(storage, ImageSet.train, 0).num_rows == 0
    append_rows(storage, ImageSet.train, 0, [good, LedgerRow(**{**good, "row": 1}, set="train", shard=0)])
    assert read_shard(storage, ImageSet.train, 0)["row"].to_pylist() == [0, 1]
