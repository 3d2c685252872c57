"""The report's "Nearest neighbours" section: a few seeded queries of each ground truth, each with its top 5
as thumbnails and distances, so a person can judge by eye whether the features make sense.

Absent when `oiv4 neighbors` has not run.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oiv4.contracts.errors import CorruptImageError, ImageNotFoundError
from oiv4.contracts.layout import LAYOUT
from oiv4.io.image_decode import decode
from oiv4.io.storage import Storage
from oiv4.read.dataset import Dataset
from oiv4.report.charts import esc
from oiv4.report.data import _jpeg_uri

THUMB_SIDE = 120
QUERIES = 3
TOP = 5


def _thumb(ds: Dataset, image_set: str, image_id: str) -> str:
    try:
        img = decode(ds[image_set].read_bytes(image_id), image_id).convert("RGB")
    except (KeyError, ImageNotFoundError, CorruptImageError):
        return f'<span class="empty">{esc(image_id)} not readable</span>'
    return f'<img class="dupthumb" src="{_jpeg_uri(img, THUMB_SIDE, 80)}" alt="{esc(image_id)}">'


def neighbors_section(storage: Storage, ds: Dataset, seed: int = 0) -> str:
    """The HTML section, or "" when there is no ground truth under the root."""
    files = sorted(storage.glob(LAYOUT.neighbors_files_glob()))
    if not files:
        return ""
    blocks = []
    for rel in files[:4]:
        model, name = rel.split("/")[-2], rel.rsplit("/", 1)[-1].removesuffix(".parquet")
        query_set = name.split("-", 1)[0].split(".", 1)[0]
        with storage.open(rel) as fh:
            table = pq.read_table(fh)
        qids = pc.unique(table["query_id"]).to_pylist()
        picked = np.random.default_rng(seed).choice(len(qids), min(QUERIES, len(qids)), replace=False)
        for q in sorted(qids[i] for i in picked):
            rows = table.filter(pc.and_(pc.equal(table["query_id"], q), pc.less_equal(table["rank"], TOP)))
            cells = [
                f"<figure class='dup'>{_thumb(ds, query_set, q)}<figcaption>query<br><code>{q}</code></figcaption></figure>"
            ]
            for r in rows.to_pylist():
                cells.append(
                    f"<figure class='dup'>{_thumb(ds, r['neighbor_set'], r['neighbor_id'])}<figcaption>#{r['rank']} · "
                    f"{r['distance']:.4g}<br>{esc(r['neighbor_set'])} <code>{r['neighbor_id']}</code></figcaption></figure>"
                )
            blocks.append(f"<div class='card'><h3>{esc(model)} · {esc(name)}</h3>{''.join(cells)}</div>")
    return f"""<section class="set" id="neighbors"><h2>Nearest neighbours</h2>
<p class="sub">Seeded queries from each ground truth written by <code>oiv4 neighbors</code>, with their top {TOP}
(distance as in the file: squared L2, negated inner product or 1 - cosine).</p>{"".join(blocks)}</section>"""
