"""oiv4 report: a self-contained page whose charts and thumbnails a real browser actually draws."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.report import ReportSettings, build_report
from support.browser import chromium as _chromium
from support.layout_builder import build_root, build_set

# Injected into a copy of the page by the test only: measures what the browser laid out and decoded.
PROBE = """<script>
window.addEventListener('load', function () {
  var charts = [].map.call(document.querySelectorAll('svg.chart'), function (svg) {
    var r = svg.getBoundingClientRect();
    var drawn = [].filter.call(svg.querySelectorAll('rect.mark'), function (m) {
      var b = m.getBoundingClientRect(); return b.width > 0 && b.height > 0;
    }).length;
    var fills = [].map.call(svg.querySelectorAll('rect.mark'), function (m) { return m.getAttribute('fill'); });
    return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height, drawn: drawn,
            fills: fills.filter(function (f, i) { return fills.indexOf(f) === i; }),
            label: svg.getAttribute('aria-label')};
  });
  var thumbs = [].map.call(document.querySelectorAll('img.thumb'), function (img) {
    var r = img.getBoundingClientRect();
    return {natural: img.naturalWidth, complete: img.complete, w: r.width, h: r.height,
            x: r.left + scrollX, y: r.top + scrollY};
  });
  var out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({charts: charts, thumbs: thumbs, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def _render_and_probe(tmp_path: Path, page: Path) -> tuple[dict, Image.Image]:
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=3000", "--window-size=1280,900", "--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert match, "the probe did not run: page scripts broken?"
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    shot = tmp_path / "shot.png"
    height = min(int(probe["height"]) + 20, 16000)
    _chromium(tmp_path, f"--window-size=1280,{height}", f"--screenshot={shot}", page.as_uri())
    return probe, Image.open(shot).convert("RGB")


def _pixels(img: Image.Image, box: dict) -> np.ndarray:
    crop = img.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["w"]), int(box["y"] + box["h"])))
    return np.asarray(crop).reshape(-1, 3).astype(int)


def _colours(img: Image.Image, box: dict) -> int:
    return len(np.unique(_pixels(img, box), axis=0))


def _painted(img: Image.Image, box: dict, hex_colour: str) -> bool:
    """Some pixel in `box` has (nearly) this fill colour: the mark was really painted there."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(_pixels(img, box) - rgb).max(axis=1) <= 10).any())


def test_report_page_draws_charts_and_thumbnails_in_a_real_browser(tmp_path):
    root = tmp_path / "root"
    build_root(root, "shard_zip", n=20, fail_every=4)

    result = CliRunner().invoke(app, ["report", "--root", str(root), "--samples", "12"])
    assert result.exit_code == 0, result.output
    page = root / "report" / "index.html"
    html = page.read_text()

    # Self-contained: nothing is loaded from anywhere (links to example URLs are only anchors).
    assert not re.search(r"<(?:script|link|img|iframe)[^>]+(?:src|href)=\"(?!data:)", html)
    assert "url(http" not in html and "@import" not in html
    for name in ("targets", "validation", "train", "extended_targets"):
        assert f'id="set-{name}"' in html
    assert "https://farm" in html  # failure table carries example URLs
    assert len(html.encode()) < 2_000_000
    # Failures by ImageID, and a CSV of all of them (small here: inlined as a data: URI).
    import base64
    import csv
    import io

    import pyarrow.compute as pc

    from oiv4.io.ledger import read_ledger
    from oiv4.io.storage import Storage

    uris = re.findall(r'href="data:text/csv;base64,([^"]+)" download="failures_(\w+)\.csv"', html)
    assert len(uris) == 4
    for b64, name in uris:
        rows = list(csv.DictReader(io.StringIO(base64.b64decode(b64).decode())))
        led = read_ledger(Storage(str(root)), name, ["image_id", "outcome", "row"])
        failed = led.filter(pc.not_equal(led["outcome"], "ok"))["image_id"].to_pylist()
        assert [r["ImageID"] for r in rows] == failed and failed
        assert f"<code>{failed[0]}</code>" in html
    # Each thumbnail opens a larger copy with its ledger row, without script.
    assert html.count('class="big"') == 4 * 12 and "<dt>outcome</dt>" in html

    probe, shot = _render_and_probe(tmp_path, page)
    charts = probe["charts"]
    # Per set: outcomes, sources, throughput, size, dimensions, aspect, latency, attempts.
    assert len(charts) == 4 * 8
    for c in charts:
        # A one-bar chart (every image took one attempt) is one 26 px row in a third-width card.
        assert c["w"] > 100 and c["h"] > (10 if c["label"] == "attempts" else 20), c
        assert c["drawn"] >= 1, c  # bars with a real, non-zero laid-out size
        if c["y"] + c["h"] < shot.height:
            for fill in c["fills"]:
                assert _painted(shot, c, fill), (fill, c)  # the bars' colours really are on screen there
    throughput = [c for c in charts if c["label"] == "throughput over time"]
    assert all(c["drawn"] >= 10 for c in throughput)
    thumbs = probe["thumbs"]
    assert len(thumbs) == 4 * 12
    assert all(t["complete"] and t["natural"] > 0 and t["w"] > 30 for t in thumbs)
    first = thumbs[0]
    assert _colours(shot, {"x": first["x"], "y": first["y"], "w": first["w"], "h": first["h"]}) >= 8


def test_report_survives_sets_with_only_failures_nothing_finished_or_no_ledger(tmp_path):
    build_set(tmp_path, "train", 6, "folder", fail_every=1)  # every row failed
    build_set(tmp_path, "extended_targets", 5, "folder", with_ledger=False)  # the notebook's output
    (tmp_path / "plan").mkdir(exist_ok=True)
    build_set(tmp_path / "other", "validation", 3, "archive_zip")
    # A planned set with nothing fetched yet.
    (tmp_path / "plan" / "targets.parquet").write_bytes((tmp_path / "other/plan/validation.parquet").read_bytes())

    out = tmp_path / "elsewhere" / "r.html"
    written = build_report(tmp_path, ReportSettings(samples=4, out=str(out)))
    assert written == str(out)
    html = out.read_text()
    assert "no images stored yet" in html  # train: all failed
    assert "measured on a sample" in html  # extended_targets: dimensions read from the files
    assert html.count('class="thumb"') == 4  # extended_targets' thumbnails
    assert "http_404" in html
    assert not (tmp_path / "report").exists()


def test_report_cli_refuses_a_missing_root(tmp_path):
    result = CliRunner().invoke(app, ["report", "--root", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_a_big_failure_list_goes_to_a_csv_beside_the_page_with_every_failed_row(tmp_path, monkeypatch):
    from oiv4.report import failures

    build_set(tmp_path, "train", 12, "folder", fail_every=1)  # every row failed
    # The inline limit is 256 kB of CSV; a full-size set crosses it, a test set would need it lowered.
    monkeypatch.setattr(failures, "INLINE_MAX_BYTES", 100)
    build_report(tmp_path, ReportSettings(samples=2))
    html = (tmp_path / "report" / "index.html").read_text()
    assert 'href="failures_train.csv"' in html
    lines = (tmp_path / "report" / "failures_train.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 12  # the header, then every failed image once


# Injected by the test only: for every table cell holding a number, whether all of it is painted where it
# lies, i.e. inside its table, its card and every ancestor that clips, and not covered by a later box.
CELL_PROBE = """<script>
window.addEventListener('load', function () {
  var NUMBER = /^[-+]?[0-9][0-9,.]*\\s*(%|s|px)?$/;
  function clips(el) { var s = getComputedStyle(el); return s.overflowX !== 'visible' || s.overflowY !== 'visible'; }
  function inside(a, b) { return a.left >= b.left - 0.5 && a.right <= b.right + 0.5 && a.top >= b.top - 0.5 &&
                                 a.bottom <= b.bottom + 0.5; }
  var cells = [].filter.call(document.querySelectorAll('td'), function (td) {
    return td.classList.contains('num') || NUMBER.test(td.textContent.trim());
  }).map(function (td) {
    td.scrollIntoView({block: 'center', inline: 'nearest'});
    var r = td.getBoundingClientRect(), table = td.closest('table'), card = td.closest('.card');
    var bad = [];
    if (!inside(r, table.getBoundingClientRect())) bad.push('outside its table');
    if (card && !inside(r, card.getBoundingClientRect())) bad.push('outside its card');
    for (var el = td.parentElement; el && el !== document.body; el = el.parentElement) {
      if (clips(el) && !inside(r, el.getBoundingClientRect())) bad.push('clipped by ' + el.tagName + '.' + el.className);
    }
    if (r.right > innerWidth + 0.5 || r.left < -0.5) bad.push('outside the window');
    [[r.left + 2, r.top + 2], [r.right - 2, r.top + 2], [r.left + 2, r.bottom - 2], [r.right - 2, r.bottom - 2]]
      .forEach(function (p) {
        var hit = document.elementFromPoint(p[0], p[1]);
        if (!hit || !td.contains(hit)) bad.push('covered at ' + p.map(Math.round) + ' by ' + (hit ? hit.tagName + '.' + hit.className : 'nothing'));
      });
    var h3 = card && card.querySelector('h3');
    return {text: td.textContent.trim(), card: h3 ? h3.textContent : '', w: r.width, bad: bad};
  });
  var out = document.createElement('pre'); out.id = 'cells';
  out.textContent = JSON.stringify(cells);
  document.body.appendChild(out);
});
</script>"""


def _number_cells(tmp_path: Path, page: Path, width: int) -> list[dict]:
    probed = tmp_path / f"cells-{width}.html"
    probed.write_text(page.read_text().replace("</body>", CELL_PROBE + "</body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=3000", f"--window-size={width},900", "--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="cells">(.*?)</pre>', dom.stdout, re.S)
    assert match, "the probe did not run: page scripts broken?"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<"))


def _full_scale_duplicates(root: Path) -> None:
    """Real hash + dedup over the root, then the summary's counts as large as the full release makes them.

    A test root is too small to find 7-digit counts or duplicates in every pair of sets; the summary is written
    by the dedup stage's own `DedupSummary`, so the page renders what a full-scale dedup writes.
    """
    from oiv4.io.storage import Storage
    from oiv4.run.executor import ExecutorSettings
    from oiv4.run.hash import hash_set
    from oiv4.stages.dedup.run import SUMMARY_REL, DedupSettings, DedupSummary, SetPairCount, run_dedup

    storage = Storage(str(root))
    sets = ("targets", "validation", "train", "extended_targets")
    for name in sets:
        hash_set(storage, name, None, ExecutorSettings(kind="thread", workers=2))
    found = run_dedup(storage, DedupSettings())
    assert found.pairs > 0  # layout_builder's sets share some images: real example pairs to show
    counts = [SetPairCount(a, b, 6_068_177 - 1_013 * k) for k, (a, b) in enumerate((a, b) for a in sets for b in sets)]
    kinds = {"near_phash": 4_567_890, "same_checksum": 1_234_567, "same_original_md5": 98_765, "same_url": 12_345}
    big = DedupSummary(found.threshold, 9_178_275, 5_913_567, kinds, 1_234_567, counts)
    storage.write_bytes(SUMMARY_REL, big.to_json().encode())


def test_every_number_in_every_table_is_fully_visible_at_1280_1600_and_1920_px(tmp_path):
    root = tmp_path / "root"
    build_root(root, "shard_zip", n=24, fail_every=4)
    _full_scale_duplicates(root)
    page = Path(build_report(root, ReportSettings(samples=4)))
    assert 'id="duplicates"' in page.read_text()

    for width in (1280, 1600, 1920):
        cells = _number_cells(tmp_path, page, width)
        dup_counts = [c for c in cells if c["card"] == "images with a duplicate in"]
        assert len(dup_counts) == 16 and {"6,068,177", "6,052,982"} <= {c["text"] for c in dup_counts}
        assert any(c["card"] == "pairs by kind" for c in cells) and any(c["card"] == "Per host" for c in cells)
        hidden = [c for c in cells if c["bad"] or c["w"] < 8]
        assert not hidden, (width, hidden[:5])
