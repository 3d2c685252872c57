"""The report page: one self-contained HTML file (inline CSS, SVG, a few lines of script, data: URI images)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from oiv4 import __version__
from oiv4.report.charts import (
    ACCENT,
    ACCENT_2,
    OK,
    PENDING,
    esc,
    fmt_bytes,
    fmt_count,
    hbars,
    histogram,
    outcome_colour,
    stacked_bar,
    timeline,
)
from oiv4.report.data import SetStats

SET_BLURB = {
    "targets": "The boxable train images (1,743,042 in the full release), from the CVDF tarballs",
    "validation": "The validation images (41,620 in the full release), from the CVDF tarball",
    "train": "The first 1,200,000 non-boxable train images, from their original URLs, shrunk to 1024 px",
    "extended_targets": "The remaining non-boxable train images (6,068,177), from their original URLs",
}

CSS = (
    """
:root{--bg:#f7f8fa;--panel:#fff;--ink:#1c2024;--muted:#60646c;--faint:#8b8d98;--line:#e4e6eb;--track:#eef0f3;
--accent:@ACCENT@;--ok:@OK@;--bad:@BAD@;--shadow:0 1px 2px rgba(16,24,40,.06),0 1px 3px rgba(16,24,40,.08)}
@media (prefers-color-scheme:dark){:root{--bg:#111317;--panel:#191b20;--ink:#edeef0;--muted:#b0b4ba;--faint:#7c7f88;
--line:#2b2e35;--track:#23262c;--shadow:none}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Inter,
Roboto,"Helvetica Neue","Liberation Sans","DejaVu Sans",Arial,sans-serif;font-variant-numeric:tabular-nums}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.wrap{max-width:1180px;margin:0 auto;padding:0 28px}
header.top{background:var(--panel);border-bottom:1px solid var(--line);padding:26px 0 0;margin-bottom:28px}
.brand{font-size:12px;letter-spacing:.08em;text-transform:uppercase;color:var(--accent);font-weight:600}
h1{font-size:28px;line-height:1.2;margin:6px 0 6px;font-weight:650;letter-spacing:-.01em}
.meta{color:var(--muted);margin:0 0 18px;font-size:13px}.meta code{font-size:12.5px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,"DejaVu Sans Mono",monospace;background:var(--track);
padding:1px 5px;border-radius:4px}
nav{display:flex;gap:4px;flex-wrap:wrap}
nav a{padding:9px 14px;color:var(--muted);border-bottom:2px solid transparent;font-weight:500}
nav a:hover{color:var(--ink);text-decoration:none;border-bottom-color:var(--line)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:16px;margin-bottom:12px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:12px;padding:18px 20px;box-shadow:var(--shadow);
min-width:0}
.card h3{margin:0 0 12px;font-size:13px;font-weight:600;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
.kpi-name{font-weight:600;font-size:15px;display:flex;justify-content:space-between;align-items:baseline}
.kpi{font-size:30px;font-weight:650;letter-spacing:-.02em;margin:8px 0 2px}
.kpi small{font-size:14px;color:var(--muted);font-weight:500;letter-spacing:0}
.legend{display:flex;gap:14px;flex-wrap:wrap;font-size:12.5px;color:var(--muted);margin-top:10px}
.legend i{display:inline-block;width:9px;height:9px;border-radius:3px;margin-right:5px;vertical-align:0}
section.set{margin:44px 0 8px;scroll-margin-top:16px}
section.set>h2{font-size:22px;margin:0 0 2px;font-weight:650;display:flex;gap:10px;align-items:center}
.pill{font-size:11.5px;font-weight:600;color:var(--accent);background:color-mix(in srgb,var(--accent) 12%,transparent);
padding:2px 9px;border-radius:99px;letter-spacing:.02em}
.sub{color:var(--muted);margin:0 0 16px}
.grid{display:grid;gap:16px;margin-bottom:16px}
.two{grid-template-columns:repeat(auto-fit,minmax(420px,1fr))}
.three{grid-template-columns:repeat(auto-fit,minmax(300px,1fr))}
.stack>.card{margin-bottom:16px}
svg.chart{display:block;width:100%;height:auto;overflow:visible}
svg.bar{display:block;width:100%;height:12px}
svg text{fill:var(--muted);font-size:11.5px}
svg .lbl{fill:var(--ink);font-size:12.5px}svg .val{fill:var(--ink);font-size:12px;font-weight:600}
svg .muted{fill:var(--faint);font-weight:400}
svg .grid{stroke:var(--line);stroke-width:1}svg .axis{stroke:var(--faint);stroke-width:1}
svg .track{fill:var(--track)}svg .axis-label{font-size:11px;fill:var(--faint)}
svg .rate-tick{fill:var(--accent)}
svg .mark{transition:opacity .12s}svg .mark:hover{opacity:.75}
.note{color:var(--faint);font-size:12.5px;margin:8px 0 0}
.empty{color:var(--faint);margin:8px 0;font-style:italic}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(112px,1fr));gap:10px}
.sheet figure{margin:0;background:var(--track);border-radius:8px;overflow:hidden;position:relative;aspect-ratio:1;
display:flex;align-items:center;justify-content:center}
.sheet img{max-width:100%;max-height:100%;object-fit:contain;display:block;transition:transform .2s}
.big{display:none;position:fixed;inset:0;background:rgba(0,0,0,.82);z-index:20;align-items:center;justify-content:center;
gap:20px;padding:24px}.big:target{display:flex}
.big img{max-width:70vw;max-height:90vh;object-fit:contain;border-radius:6px}
.big dl{color:#eee;font:12px/1.5 ui-monospace,"DejaVu Sans Mono",monospace;max-width:26vw;overflow-wrap:anywhere;margin:0}
.big dt{color:#aaa}.big dd{margin:0 0 6px}.big .close{position:absolute;top:12px;right:20px;color:#fff;font-size:26px}
.sheet figure:hover img{transform:scale(1.04)}
.sheet figcaption{position:absolute;left:0;right:0;bottom:0;padding:14px 7px 5px;font:10.5px/1.2 ui-monospace,
"DejaVu Sans Mono",monospace;color:#fff;background:linear-gradient(transparent,rgba(0,0,0,.6));opacity:0;transition:opacity .15s}
.sheet figure:hover figcaption{opacity:1}
table{width:100%;border-collapse:collapse;font-size:13px}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em;
border-bottom:1px solid var(--line);padding:6px 10px 8px}
td{border-bottom:1px solid var(--line);padding:9px 10px;vertical-align:top}
tr:last-child td{border-bottom:0}
td.num{text-align:right;white-space:nowrap;font-weight:600}
td .dot{display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:7px}
td.ex a{display:block;max-width:360px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-size:12px}
footer{color:var(--faint);font-size:12px;padding:36px 0 48px;text-align:center}
#tip{position:fixed;pointer-events:none;background:#1c2024;color:#fff;font-size:12px;padding:6px 9px;border-radius:6px;
box-shadow:0 4px 14px rgba(0,0,0,.2);opacity:0;transition:opacity .08s;z-index:10;max-width:320px}
.dups{display:flex;flex-wrap:wrap;gap:16px}
.dup{background:var(--panel);border:1px solid var(--line);border-radius:12px;padding:12px;margin:0}
.dup .pair{display:flex;gap:8px;align-items:center;height:156px}
.dup img.dupthumb{max-width:150px;max-height:150px;border-radius:4px;display:block}
.dup figcaption{font-size:12px;color:var(--muted);margin-top:6px;max-width:316px}.dup figcaption b{color:var(--ink)}
@media print{#tip,nav{display:none}.card{box-shadow:none;break-inside:avoid}}
""".replace("@ACCENT@", ACCENT)
    .replace("@OK@", OK)
    .replace("@BAD@", ACCENT_2)
)

# Tooltips only: every chart is already drawn as SVG without script.
SCRIPT = """
(function(){var tip=document.getElementById('tip');
document.addEventListener('mousemove',function(e){var t=e.target.closest&&e.target.closest('[data-tip]');
if(!t){tip.style.opacity=0;return}tip.textContent=t.getAttribute('data-tip');tip.style.opacity=1;
var x=e.clientX+14,y=e.clientY+14,r=tip.getBoundingClientRect();
if(x+r.width>innerWidth-8)x=e.clientX-r.width-14;if(y+r.height>innerHeight-8)y=e.clientY-r.height-14;
tip.style.left=x+'px';tip.style.top=y+'px'});})();
"""


def _overview_card(s: SetStats) -> str:
    planned = s.planned if s.planned is not None else s.finished
    pct = f"{100 * s.ok / planned:.1f}%" if planned else "–"
    bar = stacked_bar([("ok", s.ok, OK), ("failed", s.failed, ACCENT_2), ("pending", s.pending, PENDING)], key=s.name)
    return f"""<a class="card" href="#set-{s.name}" style="color:inherit;text-decoration:none">
<div class="kpi-name"><span>{esc(s.name)}</span><span class="pill">{esc(s.layout)}</span></div>
<div class="kpi">{s.ok:,} <small>of {planned:,} · {pct}</small></div>{bar}
<div class="legend"><span><i style="background:{OK}"></i>ok {fmt_count(s.ok)}</span>
<span><i style="background:{ACCENT_2}"></i>failed {fmt_count(s.failed)}</span>
<span><i style="background:{PENDING}"></i>pending {fmt_count(s.pending)}</span>
<span>{fmt_bytes(s.stored_bytes)} stored</span></div></a>"""


def _set_section(s: SetStats) -> str:
    sub = [f"{s.ok:,} stored"]
    if s.planned is not None:
        sub[0] += f" of {s.planned:,} planned"
    if s.failed:
        sub.append(f"{s.failed:,} failed")
    if s.pending:
        sub.append(f"{s.pending:,} pending")
    sub.append(f"{fmt_bytes(s.stored_bytes)} on disk")
    if s.rate:
        sub.append(f"{s.rate:.1f} images/s while running (timed images)")
    blurb = SET_BLURB.get(s.name, "")
    outcomes = hbars([(o, n, outcome_colour(o)) for o, n in s.outcomes], total=s.finished)
    sources = hbars([(src, n, ACCENT) for src, n in s.sources], total=s.ok) if s.sources else ""
    second = (
        f'<div class="card"><h3>Where stored images came from</h3>{sources}</div>'
        if sources
        else '<div class="card"><h3>Where stored images came from</h3><p class="empty">no images stored yet</p></div>'
    )
    legend = (
        f'<div class="legend"><span><i style="background:{OK}"></i>ok</span>'
        f'<span><i style="background:{ACCENT_2}"></i>failed</span>'
        f'<span><i style="background:{ACCENT};height:2px;border-radius:0"></i>download rate (right axis)</span></div>'
    )
    dims_note = f'<p class="note">{esc(s.dims_note)}</p>' if s.dims_note else ""
    size_hist = histogram(s.size_bins, fmt_edge=fmt_bytes, label="bytes per stored image (log scale)")
    side_hist = histogram(s.side_bins, colour="#12a594", fmt_edge=lambda v: f"{v:.0f}", label="longest side, px")
    aspect_hist = histogram(
        s.aspect_bins, colour="#8e4ec6", fmt_edge=lambda v: f"{v:.2f}", label="width / height (log scale)"
    )
    return f"""<section class="set" id="set-{s.name}">
<h2>{esc(s.name)} <span class="pill">{esc(s.layout)}</span></h2>
<p class="sub">{esc(blurb)}{". " if blurb else ""}{" · ".join(esc(x) for x in sub)}</p>
<div class="grid two"><div class="card"><h3>Outcomes</h3>{outcomes}</div>{second}</div>
<div class="stack"><div class="card"><h3>Throughput</h3>{timeline(s.buckets, s.bucket_s)}{legend if s.buckets else ""}</div></div>
<div class="grid three">
<div class="card"><h3>Stored size</h3>{size_hist}</div>
<div class="card"><h3>Dimensions</h3>{side_hist}</div>
<div class="card"><h3>Aspect ratio</h3>{aspect_hist}</div></div>{dims_note}
{_timing(s)}
<div class="stack">
<div class="card"><h3>Contact sheet · {len(s.thumbs)} samples in plan order</h3>{_sheet(s)}</div>
<div class="card"><h3>Failure kinds</h3>{_failures(s)}</div>
<div class="card"><h3>Failed images</h3>{_failed_images(s)}</div></div>
</section>"""


def _sheet(s: SetStats) -> str:
    if not s.thumbs:
        return '<p class="empty">no stored images to show</p>'
    figs, bigs = [], []
    for t in s.thumbs:
        key = f"big-{s.name}-{t.image_id}"
        figs.append(
            f'<a href="#{esc(key)}"><figure data-tip="{t.image_id} · {t.width}×{t.height} · click to enlarge">'
            f'<img class="thumb" src="{t.data_uri}" alt="{t.image_id}" loading="eager">'
            f"<figcaption>{t.image_id}</figcaption></figure></a>"
        )
        row = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in t.ledger.items())
        bigs.append(
            f'<div class="big" id="{esc(key)}"><a class="close" href="#set-{s.name}">×</a>'
            f'<img src="{t.large_uri or t.data_uri}" alt="{t.image_id}"><dl>{row}</dl></div>'
        )
    return f'<div class="sheet">{"".join(figs)}</div>{"".join(bigs)}'


def _timing(s: SetStats) -> str:
    lat = histogram(s.latency_bins, colour="#0090ff", fmt_edge=lambda v: f"{v:.2g}s", label="seconds per image (log)")
    att = hbars(
        [(f"{a} attempt{'s' if a != 1 else ''}", n, ACCENT) for a, n in s.attempts], total=s.finished, title="attempts"
    )
    hosts = "".join(
        f'<tr><td>{esc(h.host)}</td><td class="num">{h.images:,}</td><td class="num">{h.ok_pct:.1f}%</td>'
        f'<td class="num">{"–" if h.median_s is None else f"{h.median_s:.2f} s"}</td></tr>'
        for h in s.hosts
    )
    host_table = (
        '<table><thead><tr><th>host</th><th style="text-align:right">images</th><th style="text-align:right">ok</th>'
        f'<th style="text-align:right">median latency</th></tr></thead><tbody>{hosts}</tbody></table>'
        if hosts
        else '<p class="empty">no URLs recorded</p>'
    )
    # Per host gets a whole row: a third of the page is too narrow for a host name and three 7-digit columns.
    return (
        f'<div class="grid two"><div class="card"><h3>Latency</h3>{lat}</div>'
        f'<div class="card"><h3>Attempts</h3>{att}</div></div>'
        f'<div class="stack"><div class="card"><h3>Per host</h3>{host_table}</div></div>'
    )


def _failed_images(s: SetStats) -> str:
    if not s.failed_images:
        return '<p class="empty">no failures recorded</p>'
    rows = "".join(
        f"<tr><td><code>{esc(f.image_id)}</code></td><td>{esc(f.outcome)}</td><td>{esc(f.reason) or '–'}</td>"
        f'<td class="ex"><a href="{esc(f.url)}" rel="noreferrer">{esc(f.url)}</a></td></tr>'
        for f in s.failed_images
    )
    link = (
        f'<p class="note"><a class="csv" href="{esc(s.failures_csv)}" download="failures_{s.name}.csv">'
        f"Download all {s.failed:,} failures as CSV</a> · the first {len(s.failed_images):,} in plan order:</p>"
        if s.failures_csv
        else ""
    )
    return (
        f"{link}<table><thead><tr><th>ImageID</th><th>outcome</th><th>kind</th><th>URL</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _failures(s: SetStats) -> str:
    if not s.failures:
        return '<p class="empty">no failures recorded</p>'
    rows = []
    for f in s.failures:
        ex = "".join(f'<a href="{esc(u)}" rel="noreferrer">{esc(u)}</a>' for u in f.examples) or "–"
        rows.append(
            f'<tr><td style="white-space:nowrap"><span class="dot" style="background:{outcome_colour(f.outcome)}">'
            f'</span>{esc(f.outcome)}</td><td title="{esc(f.example_reason)}">{esc(f.reason) or "–"}</td><td class="num">{f.count:,}</td>'
            f'<td class="ex">{ex}</td></tr>'
        )
    return (
        '<table><thead><tr><th>outcome</th><th>kind</th><th style="text-align:right">images</th>'
        f"<th>example URLs</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def render(root: str, sets: Sequence[SetStats], generated: datetime | None = None, duplicates: str = "") -> str:
    """The whole page as a string; `duplicates` is the rendered Duplicates section (`report.duplicates`) or ""."""
    generated = generated or datetime.now(UTC)
    nav = "".join(f'<a href="#set-{s.name}">{esc(s.name)}</a>' for s in sets)
    nav += '<a href="#duplicates">duplicates</a>' if duplicates else ""
    total_ok = sum(s.ok for s in sets)
    total_planned = sum(s.planned or s.finished for s in sets)
    stored = sum(s.stored_bytes for s in sets)
    body = "".join(_set_section(s) for s in sets) or '<p class="empty">nothing built under this root yet</p>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>oiv4 report · {esc(root)}</title><style>{CSS}</style></head>
<body><header class="top"><div class="wrap"><div class="brand">oiv4 · OpenImages V4</div>
<h1>Build report</h1>
<p class="meta"><code>{esc(root)}</code> · {total_ok:,} of {total_planned:,} images stored ({fmt_bytes(stored)})
 · generated {generated:%Y-%m-%d %H:%M} UTC</p><nav>{nav}</nav></div></header>
<main class="wrap"><div class="cards">{"".join(_overview_card(s) for s in sets)}</div>{duplicates}{body}</main>
<footer>oiv4 {__version__} · self-contained report: no network needed to view it</footer>
<div id="tip" role="tooltip"></div><script>{SCRIPT}</script></body></html>
"""
