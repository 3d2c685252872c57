"""Inline SVG charts: plain strings, no library, no script needed to draw them (the page opens offline).

Every data mark carries `class="mark"`, a `data-tip` for the page's tooltip and a `<title>` for
screen readers and browsers without script. Colours are fixed per outcome so the same failure looks the
same in every set.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from datetime import datetime

from oiv4.report.data import Bin, Bucket

OK = "#2b9a66"
PENDING = "#c9ced6"
ACCENT = "#3e63dd"
ACCENT_2 = "#e5484d"
#: Known outcomes get a stable colour; others take the next colour of FALLBACK by name.
OUTCOME_COLOURS = {
    "ok": OK,
    "http_404": "#e5484d",
    "http_410": "#ce2c31",
    "http_403": "#f76b15",
    "http_429": "#ffb224",
    "http_5xx": "#d6409f",
    "md5_mismatch": "#8e4ec6",
    "size_mismatch": "#6e56cf",
    "placeholder": "#e2a336",
    "timeout": "#0090ff",
    "connection_error": "#3e63dd",
    "bad_redirect": "#12a594",
    "truncated": "#ab4aba",
    "too_large": "#978365",
    "not_image": "#a18072",
    "decode_error": "#cc4e00",
    "decompression_bomb": "#7d0f22",
    "invalid_id": "#646464",
    "hostile_member": "#30a46c",
    "missing_from_archive": "#8d8d8d",
    "disk_full": "#202020",
    "write_error": "#5b5b5b",
    "verify_failed": "#b3261e",
}
FALLBACK = ("#0d74ce", "#ad5700", "#9a5cd0", "#00897b", "#c2298a", "#5c7c2f", "#b35d00", "#4f5bd5")


def outcome_colour(outcome: str) -> str:
    if outcome in OUTCOME_COLOURS:
        return OUTCOME_COLOURS[outcome]
    if outcome.startswith("http_5"):
        return OUTCOME_COLOURS["http_5xx"]
    return FALLBACK[sum(map(ord, outcome)) % len(FALLBACK)]


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def fmt_count(n: float) -> str:
    n = float(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.1f}{suffix}" if v < 10 else f"{v:.0f}{suffix}"
    return f"{n:.0f}" if n == int(n) else f"{n:.1f}"


def fmt_bytes(n: float) -> str:
    n = float(n)
    for div, unit in ((1 << 40, "TB"), (1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")):
        if n >= div:
            v = n / div
            return f"{v:.1f} {unit}" if v < 10 else f"{v:.0f} {unit}"
    return f"{n:.0f} B"


def nice_ticks(vmax: float, n: int = 4) -> list[float]:
    """0 and round steps up to at least `vmax` (1, 2, 2.5, 5 x 10^k)."""
    if vmax <= 0:
        return [0.0, 1.0]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    top = math.ceil(vmax / step - 1e-9) * step
    return [i * step for i in range(round(top / step) + 1)]


def _svg(width: int, height: int, body: str, label: str, cls: str = "chart") -> str:
    return (
        f'<svg class="{cls}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _mark(tag: str, attrs: str, tip: str) -> str:
    return f'<{tag} class="mark" {attrs} data-tip="{esc(tip)}"><title>{esc(tip)}</title></{tag}>'


def hbars(
    items: Sequence[tuple[str, int, str]],
    *,
    total: int | None = None,
    width: int = 560,
    title: str = "outcome breakdown",
) -> str:
    """Horizontal bars, one per (label, count, colour), with count and share on the right."""
    if not items:
        return '<p class="empty">nothing recorded yet</p>'
    total = total or sum(n for _, n, _ in items) or 1
    row_h, label_w, value_w = 26, 170, 110
    bar_w = width - label_w - value_w
    vmax = max(n for _, n, _ in items) or 1
    parts = []
    for i, (label, n, colour) in enumerate(items):
        y = i * row_h
        w = max(2.0, bar_w * n / vmax)
        parts.append(f'<text x="{label_w - 10}" y="{y + 17}" class="lbl" text-anchor="end">{esc(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 5}" width="{bar_w}" height="16" rx="3" class="track"/>')
        tip = f"{label}: {n:,} ({100 * n / total:.1f}%)"
        parts.append(
            _mark("rect", f'x="{label_w}" y="{y + 5}" width="{w:.1f}" height="16" rx="3" fill="{colour}"', tip)
        )
        parts.append(
            f'<text x="{label_w + bar_w + 10}" y="{y + 17}" class="val">{n:,}'
            f'<tspan class="muted"> · {100 * n / total:.1f}%</tspan></text>'
        )
    return _svg(width, row_h * len(items) + 4, "".join(parts), title)


def stacked_bar(parts: Sequence[tuple[str, int, str]], *, key: str, width: int = 560, height: int = 12) -> str:
    """One full-width bar split by (label, count, colour): the overview of a set."""
    total = sum(n for _, n, _ in parts)
    if total == 0:
        return _svg(width, height, f'<rect width="{width}" height="{height}" rx="6" class="track"/>', "empty")
    body, x = [f'<rect width="{width}" height="{height}" rx="6" class="track"/>'], 0.0
    for label, n, colour in parts:
        if n == 0:
            continue
        w = width * n / total
        tip = f"{label}: {n:,} ({100 * n / total:.1f}%)"
        body.append(
            _mark("rect", f'x="{x:.2f}" y="0" width="{max(w, 1.5):.2f}" height="{height}" fill="{colour}"', tip)
        )
        x += w
    clip = f'<clipPath id="clip-{esc(key)}"><rect width="{width}" height="{height}" rx="6"/></clipPath>'
    g = f'<g clip-path="url(#clip-{esc(key)})">{"".join(body)}</g>'
    return _svg(width, height, clip + g, "set overview", "bar")


def histogram(
    bins: Sequence[Bin],
    *,
    colour: str = ACCENT,
    fmt_edge: Callable[[float], str] = fmt_count,
    label: str = "",
    width: int = 360,
    height: int = 200,
) -> str:
    """Vertical bars over `bins`, count axis on the left, a few edge labels below."""
    bins = _trim(bins)
    if not bins:
        return '<p class="empty">no data</p>'
    left, right, top, bottom = 44, 10, 10, 34
    pw, ph = width - left - right, height - top - bottom
    ticks = nice_ticks(max(b.count for b in bins))
    ymax = ticks[-1] or 1
    bw = pw / len(bins)
    parts = []
    for t in ticks:
        y = top + ph - ph * t / ymax
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{fmt_count(t)}</text>')
    for i, b in enumerate(bins):
        if b.count == 0:
            continue
        h = max(1.5, ph * b.count / ymax)
        x = left + i * bw + 1
        tip = f"{fmt_edge(b.lo)} – {fmt_edge(b.hi)}: {b.count:,}"
        parts.append(
            _mark(
                "rect",
                f'x="{x:.1f}" y="{top + ph - h:.1f}" width="{max(1.0, bw - 2):.1f}" height="{h:.1f}" '
                f'rx="1.5" fill="{colour}"',
                tip,
            )
        )
    step = max(1, math.ceil(len(bins) / 5))
    for i in range(0, len(bins) + 1, step):
        x = left + i * bw
        edge = bins[i].lo if i < len(bins) else bins[-1].hi
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 16}" class="tick" text-anchor="middle">{fmt_edge(edge)}</text>'
        )
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top + ph}" y2="{top + ph}" class="axis"/>')
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 3}" class="axis-label" text-anchor="middle">{esc(label)}</text>'
    )
    return _svg(width, height, "".join(parts), label)


def _trim(bins: Sequence[Bin]) -> list[Bin]:
    """Drop empty bins at both ends so the bars use the width."""
    idx = [i for i, b in enumerate(bins) if b.count]
    return list(bins[idx[0] : idx[-1] + 1]) if idx else []


def timeline(buckets: Sequence[Bucket], bucket_s: float, *, width: int = 1080, height: int = 240) -> str:
    """Stacked columns of ok / failed images finished per time bucket, download rate as a line."""
    if not buckets:
        return '<p class="empty">no timings recorded</p>'
    left, right, top, bottom = 52, 64, 14, 34
    pw, ph = width - left - right, height - top - bottom
    peak = max(b.ok + b.failed for b in buckets) / bucket_s
    per, unit = (1.0, "images / s") if peak >= 1 else (60.0, "images / min")
    ticks = nice_ticks(peak * per)
    ymax = ticks[-1] or 1
    bw = pw / len(buckets)
    parts = []
    for t in ticks:
        y = top + ph - ph * t / ymax
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{fmt_count(t)}</text>')
    for i, b in enumerate(buckets):
        x = left + i * bw + (0.5 if bw > 3 else 0)
        w = max(0.8, bw - (1 if bw > 3 else 0))
        base = top + ph
        for n, colour, what in ((b.ok, OK, "ok"), (b.failed, ACCENT_2, "failed")):
            if n == 0:
                continue
            h = max(1.0, ph * n / bucket_s * per / ymax)
            tip = f"{_fmt_time(b.start, bucket_s)}: {n:,} {what} ({n / bucket_s * per:.1f} {unit})"
            parts.append(
                _mark("rect", f'x="{x:.2f}" y="{base - h:.2f}" width="{w:.2f}" height="{h:.2f}" fill="{colour}"', tip)
            )
            base -= h
    rates = [b.bytes / bucket_s for b in buckets]
    if max(rates) > 0:
        rticks = nice_ticks(max(rates) / (1 << 20), 4)
        rmax = rticks[-1] or 1
        pts = " ".join(
            f"{left + (i + 0.5) * bw:.1f},{top + ph - ph * r / (1 << 20) / rmax:.1f}" for i, r in enumerate(rates)
        )
        parts.append(
            f'<polyline points="{pts}" class="mark rate" fill="none" stroke="{ACCENT}" stroke-width="1.8" '
            f'data-tip="download rate (MB/s)"><title>download rate (MB/s)</title></polyline>'
        )
        for t in rticks:
            y = top + ph - ph * t / rmax
            parts.append(f'<text x="{left + pw + 6}" y="{y + 4:.1f}" class="tick rate-tick">{t:g}</text>')
        parts.append(
            f'<text x="{width - 4}" y="{height - 3}" class="axis-label rate-tick" text-anchor="end">MB/s</text>'
        )
    step = max(1, math.ceil(len(buckets) / 8))
    for i in range(0, len(buckets), step):
        x = left + (i + 0.5) * bw
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 16}" class="tick" text-anchor="middle">'
            f"{_fmt_time(buckets[i].start, bucket_s, short=True)}</text>"
        )
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" class="axis"/>')
    parts.append(
        f'<text x="{left}" y="{height - 3}" class="axis-label">{unit} · {_fmt_span(bucket_s)} buckets · UTC</text>'
    )
    return _svg(width, height, "".join(parts), "throughput over time")


def _fmt_time(t: datetime, bucket_s: float, short: bool = False) -> str:
    if bucket_s < 1:  # sub-second buckets of a short run
        return t.strftime("%H:%M:%S.%f")[:-3]
    if bucket_s >= 86400:
        return t.strftime("%m-%d")
    if short and bucket_s >= 3600:
        return t.strftime("%m-%d %H:%M")
    return t.strftime("%H:%M" if short and bucket_s >= 60 else "%H:%M:%S") if short else t.strftime("%Y-%m-%d %H:%M:%S")


def _fmt_span(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    seconds = int(seconds)
    for div, unit in ((604800, "week"), (86400, "day"), (3600, "hour"), (60, "min"), (1, "s")):
        if seconds >= div and seconds % div == 0:
            return f"{seconds // div} {unit}"
    return f"{seconds} s"
