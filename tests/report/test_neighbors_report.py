"""The report shows a "Nearest neighbours" section once ground truth exists, and none before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.report import build_report
from support.feature_shards import write_features
from support.layout_builder import build_set

MODEL = "vgg16-fc2"


def test_report_shows_seeded_queries_with_their_top_five(tmp_path) -> None:
    built = build_set(tmp_path, "validation", 12)
    assert "Nearest neighbours" not in Path(build_report(str(tmp_path))).read_text()
    vecs = np.random.default_rng(0).standard_normal((len(built.ok_ids), 4)).astype(np.float16)
    write_features(tmp_path, MODEL, "validation", vecs, 5, built.ok_ids)
    args = ["neighbors", "-r", str(tmp_path), "--queries", "validation", "--database", "validation", "--k", "6"]
    assert CliRunner().invoke(app, args).exit_code == 0
    html = Path(build_report(str(tmp_path))).read_text()
    section = html[html.index("Nearest neighbours") :].split("</section>", 1)[0]
    assert section.count("query<br>") == 3
    assert section.count("#5 ·") == 3 and "#6 ·" not in section
    assert section.count("data:image/jpeg;base64") == 18  # each query and its top 5, as thumbnails
