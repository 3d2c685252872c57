"""The report's "Duplicates" section: what `oiv4 dedup` found, and example pairs to judge the threshold by eye.

Read from `dedup/summary.json` and `dedup/pairs.parquet`; absent when dedup has not run. Example pairs are
picked one per distance (0, 2, 4, ... up to the threshold), train or extended_targets against targets or
validation first (the pairs that matter for held-out sets), plus one pair stored turned by a right angle when
there is one; each pair is shown side by side as stored, aspect kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oiv4.contracts.errors import CorruptImageError, ImageNotFoundError
from oiv4.io.fingerprint import hamming, rotations
from oiv4.io.ledger import read_ledger
from oiv4.io.storage import Storage
from oiv4.read.dataset import Dataset
from oiv4.report.charts import esc
from oiv4.report.data import _jpeg_uri
from oiv4.stages.dedup import read_pairs
from oiv4.stages.dedup.run import HELD_OUT, SUMMARY_REL

#: Side of each example thumbnail (px, longest side).
THUMB_SIDE = 150
URL_SETS = ("train", "extended_targets")


@dataclass
class ExamplePair:
    """One pair shown side by side."""

    id_a: str
    set_a: str
    id_b: str
    set_b: str
    distance: int
    kind: str
    turn: int = 0  # degrees one is turned against the other, judged from the hashes
    uris: tuple[str, str] = ("", "")


@dataclass
class DuplicateStats:
    """What the section shows."""

    summary: dict[str, Any]
    examples: list[ExamplePair] = field(default_factory=list)


def _turns(storage: Storage, pairs: pa.Table) -> np.ndarray:
    """Per pair, 0/90/180/270: the right angle at which b's hash is closest to a's (ledger phash)."""
    hashes: dict[str, int] = {}
    for name in set(pairs["set_a"].to_pylist()) | set(pairs["set_b"].to_pylist()):
        try:
            led = read_ledger(storage, name, ["image_id", "phash"])
        except (FileNotFoundError, KeyError, ValueError):
            continue
        led = led.filter(pc.is_valid(led["phash"]))
        hashes.update(zip(led["image_id"].to_pylist(), led["phash"].to_pylist(), strict=True))
    turns = np.zeros(pairs.num_rows, dtype=np.int64)
    for k, (a, b) in enumerate(zip(pairs["id_a"].to_pylist(), pairs["id_b"].to_pylist(), strict=True)):
        if a in hashes and b in hashes:
            d = hamming(np.uint64(hashes[a]), rotations(np.array([hashes[b]], dtype=np.uint64))[:, 0])
            turns[k] = 90 * int(np.argmin(d)) if int(np.min(d)) < int(d[0]) else 0
    return turns


def _pick(pairs: pa.Table, turns: np.ndarray, threshold: int) -> list[ExamplePair]:
    rows = pairs.to_pylist()
    held = set(HELD_OUT)

    def rank(k: int) -> tuple[int, str, str]:
        r = rows[k]
        cross = ({r["set_a"], r["set_b"]} & held and {r["set_a"], r["set_b"]} & set(URL_SETS)) or False
        return (0 if cross else 1, r["id_a"], r["id_b"])

    order = sorted(range(len(rows)), key=rank)
    chosen: list[int] = []
    for target in range(0, threshold + 1, 2):
        near = [k for k in order if abs(rows[k]["distance"] - target) <= 1 and k not in chosen]
        exact = [k for k in near if rows[k]["distance"] == target]
        if exact or near:
            chosen.append((exact or near)[0])
    if not any(turns[k] for k in chosen):
        turned = [k for k in order if turns[k]]
        if turned:
            chosen.append(turned[0])
    return [ExamplePair(**{c: rows[k][c] for c in ExamplePair.__dataclass_fields__ if c in rows[k]},
                        turn=int(turns[k])) for k in chosen]  # fmt: skip


def collect_duplicates(storage: Storage, ds: Dataset) -> DuplicateStats | None:
    """The section's data, or None when `oiv4 dedup` has not run under this root."""
    if not storage.exists(SUMMARY_REL):
        return None
    summary = json.loads(storage.read_bytes(SUMMARY_REL))
    try:
        pairs = read_pairs(storage)
    except FileNotFoundError:
        return DuplicateStats(summary)
    examples = _pick(pairs, _turns(storage, pairs), int(summary["threshold"])) if pairs.num_rows else []
    for ex in examples:
        try:
            a, b = ds[ex.set_a][ex.id_a], ds[ex.set_b][ex.id_b]
        except (KeyError, ImageNotFoundError, CorruptImageError):
            continue  # a set rebuilt since dedup ran: the pair is still counted, just not shown
        ex.uris = (_jpeg_uri(a.convert("RGB"), THUMB_SIDE, 80), _jpeg_uri(b.convert("RGB"), THUMB_SIDE, 80))
    return DuplicateStats(summary, [ex for ex in examples if ex.uris[0]])


def duplicates_section(stats: DuplicateStats | None) -> str:
    """The HTML section (empty when dedup has not run)."""
    if stats is None:
        return ""
    s = stats.summary
    counts = "".join(
        f"<tr><td>{esc(c['set'])}</td><td>{esc(c['against'])}</td><td class='num'>{c['images']:,}</td></tr>"
        for c in s.get("counts", [])
    )
    kinds = "".join(
        f"<tr><td>{esc(k)}</td><td class='num'>{n:,}</td></tr>" for k, n in sorted(s.get("pairs_by_kind", {}).items())
    )
    figs = []
    for ex in stats.examples:
        turn = f" · turned {ex.turn}°" if ex.turn else ""
        figs.append(
            f'<figure class="dup"><div class="pair">'
            f'<img class="dupthumb" src="{ex.uris[0]}" alt="{ex.id_a}"><img class="dupthumb" src="{ex.uris[1]}" '
            f'alt="{ex.id_b}"></div><figcaption><b>distance {ex.distance}</b> · {esc(ex.kind)}{turn}<br>'
            f"{esc(ex.set_a)} <code>{ex.id_a}</code><br>{esc(ex.set_b)} <code>{ex.id_b}</code></figcaption></figure>"
        )
    examples = "".join(figs) or '<p class="empty">no duplicate pairs to show</p>'
    return f"""<section class="set" id="duplicates"><h2>Duplicates</h2>
<p class="sub"><b>{esc(s.get("headline", ""))}</b>. Pairs within {s["threshold"]} bits of 64 (perceptual hash,
any right-angle turn) or with the same original, stored bytes or URL. Judge the threshold by eye below:
one example per distance, train against held-out sets first.</p>
<div class="grid two"><div class="card"><h3>images with a duplicate in</h3><table><thead><tr><th>set</th><th>in</th>
<th style="text-align:right">images</th></tr></thead><tbody>{counts}</tbody></table></div>
<div class="card"><h3>pairs by kind</h3><table><tbody>{kinds}</tbody></table></div></div>
<div class="card"><h3>example pairs by distance</h3><div class="dups">{examples}</div></div></section>"""
