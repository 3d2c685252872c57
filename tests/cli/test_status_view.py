"""`oiv4 status` stays readable at 80 and 200 columns: one line per failure kind, full reasons with --verbose."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from oiv4.cli.status_view import status_json, status_view
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger_write import LedgerBuffer, now_utc
from oiv4.io.storage import Storage
from oiv4.stages.status import collect_status

LONG = (
    "redirected to https://s.yimg.com/pw/images/en-us/photo_unavailable.png from "
    "https://farm{n}.staticflickr.com/{n}{n}/{n}_abcdef_o.jpg: Flickr serves this placeholder for deleted photos"
)
REASONS = {
    "placeholder": LONG,
    "http_404": "HTTP 404 Not Found from farm3.staticflickr.com after following 2 redirects (the photo was removed)",
    "timeout": "no response within {n} s (read timeout after 3 attempts with exponential back-off between them)",
}


def _root(tmp_path: Path) -> Storage:
    storage = Storage(str(tmp_path))
    counts = {"targets": 0, "validation": 0, "train": 40, "extended_targets": 0}
    storage.write_bytes(LAYOUT.plan_summary(), json.dumps({"shard_rows": 40, "counts": counts}).encode())
    led = LedgerBuffer(storage, ImageSet.train, 0)
    outcomes = ["ok", "placeholder", "http_404", "timeout"]
    for row in range(36):
        o = outcomes[row % 4]
        reason = REASONS[o].format(n=row) if o != "ok" else None
        led.record(image_id=f"{row:016x}", row=row, outcome=o, reason=reason, started_at=now_utc())
    led.close()
    return storage


def _render(statuses, width: int, verbose: bool) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, legacy_windows=False).print(
        status_view(statuses, verbose=verbose)
    )
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 200])
def test_each_failure_kind_is_one_line_at_any_width(tmp_path: Path, width: int) -> None:
    (st,) = collect_status(_root(tmp_path), ["train"])
    assert len(st.kinds) == 3  # nine placeholder reasons naming nine URLs are one kind
    out = _render([st], width, verbose=False)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "train" in out and "40" in out and "GB" in out  # set name, planned count, bytes: never squeezed out
    assert "…" not in "".join(line[-22:] for line in lines)  # counts and shares are never cut
    for k in st.kinds:
        mine = [line for line in lines if k.outcome in line]
        assert len(mine) == 1, out  # the kind's row did not wrap onto a second line
        assert f"{k.count:,}" in mine[0]
    # nothing but the table: a row per planned/ok/kind/not-yet-done/stored, plus title and header
    assert len([line for line in lines if line.strip()]) == 2 + 1 + 1 + 3 + 1 + 1


@pytest.mark.parametrize("width", [80, 200])
def test_verbose_shows_every_full_reason_uncut(tmp_path: Path, width: int) -> None:
    (st,) = collect_status(_root(tmp_path), ["train"])
    out = _render([st], width, verbose=True)
    detail = out.split("e.g.", 1)[1]
    assert "…" not in detail
    flat = "".join(line.strip() for line in out.splitlines())
    for k in st.kinds:
        assert k.example.replace(" ", "") in flat.replace(" ", "")
    assert REASONS["placeholder"].format(n=1) == st.kinds[0].example or st.kinds[0].outcome != "placeholder"


def test_status_json_carries_full_reasons(tmp_path: Path) -> None:
    (st,) = collect_status(_root(tmp_path), ["train"])
    doc = json.loads(status_json([st]))
    kinds = {k["outcome"]: k for k in doc[0]["failure_kinds"]}
    assert kinds["placeholder"]["example"] == REASONS["placeholder"].format(n=1)
    assert kinds["placeholder"]["count"] == 9 and kinds["placeholder"]["kind"].startswith(
        "redirected to <url> from <url>"
    )
    assert doc[0]["counts"]["ok"] == 9 and doc[0]["remaining"] == 4


def test_a_failure_kind_is_one_line_however_many_digests_sizes_and_urls_its_rows_name() -> None:
    from oiv4.io.reason_kind import reason_kind

    md5 = {
        reason_kind(f"MD5 {a}== differs from OriginalMD5 {b}== (1,{n:03d} bytes)")
        for a, b, n in [
            ("1Hv6w7XB6hT0DzG9IoF7/A", "KFukvivpCM5QXl5SqKe41g", 1),
            ("x3fu2AVh8e9qegqGM3R3tA", "eKKohtysvSdMAtSohrUTgw", 2),
        ]
    }
    sizes = {reason_kind(f"JPEG {w}x{h}: libjpeg-turbo: Corrupt JPEG data: premature end of data segment")
             for w, h in [(1237, 1856), (2037, 1146)]}  # fmt: skip
    assert md5 == {"MD5 <md5> differs from OriginalMD5 <md5> (N bytes)"}
    assert sizes == {"JPEG NxN: libjpeg-turbo: Corrupt JPEG data: premature end of data segment"}
