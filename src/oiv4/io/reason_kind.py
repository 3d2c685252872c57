"""One failure *kind* per reason: the reason with its URLs and numbers taken out.

Flickr's placeholder redirect names the URL it redirected from, so its reasons differ row by row; as kinds
they are one. The kind is computed once, when a ledger row is written (the `reason_kind` column, by
`reason_kinds` over the whole table in Arrow), and readers use the stored value. The same rule exists as a
Python function and as a DuckDB expression, for ledger files written before the column existed until their
next compaction stores it: all three use only constructs that Python's `re` and RE2 (Arrow, DuckDB) read
alike (explicit ASCII classes, ASCII `\\b`), and a test checks they agree.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

#: (pattern, replacement), applied in order.
RULES: tuple[tuple[str, str], ...] = (
    ("[A-Za-z][A-Za-z0-9+.-]*://[^ \t\r\n\"'<>]+", "<url>"),
    ("[A-Za-z0-9+/]{22}==", "<md5>"),  # base64 MD5 digests: every md5_mismatch names two
    ("\\b[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+:[0-9]+\\b", "<host>"),  # "Cannot connect to host farm8.staticflickr.com:443"
    ("\\b[0-9]+(\\.[0-9]+)?s\\b", "Ns"),  # durations ("after 30.2s", "no data for 30s"): no word boundary inside
    ("\\b[0-9]+x[0-9]+\\b", "NxN"),  # image sizes ("JPEG 1237x1856: ..."): no word boundary inside them
    ("\\b[0-9]+([.,][0-9]+)*\\b", "N"),  # whole numbers only: "MD5" and "farm3" keep their digits
)
_COMPILED = tuple((re.compile(p, re.ASCII), r) for p, r in RULES)  # ASCII `\b`, as RE2's


def reason_kind(reason: str | None) -> str:
    """The kind of a ledger reason ("" for none)."""
    text = reason or ""
    for pattern, repl in _COMPILED:
        text = pattern.sub(repl, text)
    return text


def reason_kind_sql(column: str = "reason") -> str:
    """The same as a DuckDB expression over `column`."""
    expr = f"coalesce({column}, '')"
    for pattern, repl in RULES:
        expr = f"regexp_replace({expr}, '{pattern.replace(chr(39), chr(39) * 2)}', '{repl}', 'g')"
    return expr


def reason_kinds(reasons: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The kinds of a column of reasons, vectorised in Arrow (RE2, as DuckDB); "" where the reason is null."""
    out = pc.fill_null(reasons.cast(pa.string()), "")
    for pattern, repl in RULES:
        out = pc.replace_substring_regex(out, pattern, repl)
    return out


def stored_or_computed_sql(column: str = "reason_kind", reason: str = "reason") -> str:
    """A DuckDB expression: the stored kind, or the rule applied to `reason` on rows written before it was stored."""
    return f"CASE WHEN {column} IS NOT NULL THEN {column} ELSE {reason_kind_sql(reason)} END"


def with_reason_kind(table: pa.Table) -> pa.Table:
    """`table` with its `reason_kind` column filled wherever it is null or missing (`oiv4.io.reason_kind`).

    Every ledger write goes through here, so a row's kind is computed once, when it is written; a compaction
    of rows written before the column existed stores theirs then."""
    at = table.schema.get_field_index("reason_kind")
    stored = table["reason_kind"] if at >= 0 else None
    if stored is not None and stored.null_count == 0:
        return table
    reasons = table["reason"] if "reason" in table.column_names else pa.nulls(table.num_rows, pa.string())
    computed = reason_kinds(reasons)
    kinds = computed if stored is None else pc.coalesce(stored, computed)
    field_ = pa.field("reason_kind", pa.string())
    return table.append_column(field_, kinds) if at < 0 else table.set_column(at, field_, kinds)
