"""Benchmark: `oiv4 plan` on full-size synthetic metadata vs the notebook's pandas approach, one run.

Generates 9,178,275 full-file rows and 1,743,042 boxable rows in the real 12-column schema with
typical field lengths (~3 GB), then runs each contender in its own process and reports wall time and
peak RSS (ru_maxrss of that child), plus the ratio.

    .venv/bin/python benchmarks/plan_scale.py [--data bench-data/plan] [--rows 9178275] [--boxable 1743042]
        [--oiv4-only] [--repeat 1]

`--oiv4-only` skips the pandas baselines (minutes each) when only comparing two versions of oiv4;
`--repeat N` reports the best of N oiv4 runs, as a shared machine makes single runs noisy.

Targets (issue 2): oiv4 plan < 60 s and < 3 GB peak on 2 cores, and >= 5x faster than pandas.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from oiv4.contracts.schema import COLUMNS

TITLES = [
    "...die FNF-Kerze",
    "Sunset over the lake, Tahoe",
    'The "big" day',
    "Café de Flore, Paris",
    "日本の風景",
    "IMG_4032",
    "Birthday party, 2009 (part 2)",
    "Zürich Hauptbahnhof",
    "",
]
AUTHORS = ["Michael Beat", "Zoë K.", "Bob, Jr.", 'The "Real" Al', "田中", "anonymous"]
LICENSES = [
    "https://creativecommons.org/licenses/by/2.0/",
    "https://creativecommons.org/licenses/by-sa/2.0/",
    "https://creativecommons.org/licenses/by-nc/2.0/",
]
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8)


def _fixed_strings(chars: np.ndarray) -> pa.Array:
    """(n, w) uint8 -> arrow string array of width w, without a Python loop."""
    n, w = chars.shape
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * w).tobytes())
    return pa.StringArray.from_buffers(n, offsets, pa.py_buffer(np.ascontiguousarray(chars).tobytes()))


def _ids(rng: np.random.Generator, n: int) -> pa.Array:
    return _fixed_strings(HEX[rng.integers(0, 16, size=(n, 16))])


def _num(a: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(a), pa.string())


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _rows(rng: np.random.Generator, ids: pa.Array, subset: pa.Array) -> pa.Table:
    n = len(ids)
    photo = rng.integers(10**9, 10**10, size=n)
    farm = rng.integers(1, 10, size=n)
    server = rng.integers(1000, 9999, size=n)
    secret = _fixed_strings(HEX[rng.integers(0, 16, size=(n, 10))])
    user = pa.array(
        np.array(["michael-beat", "zoe_k", "bobjr", "real-al", "tanaka123", "user4567"])[rng.integers(0, 6, size=n)]
    )
    md5 = _fixed_strings(
        np.concatenate([B64[rng.integers(0, 64, size=(n, 22))], np.full((n, 2), ord("="), np.uint8)], axis=1)
    )
    rot = pa.array(np.array(["0.0"] * 90 + ["90.0", "180.0", "270.0"] + [""] * 7)[rng.integers(0, 100, size=n)])
    has_thumb = rng.random(n) < 0.9
    thumb = _join(
        "https://c1.staticflickr.com/", _num(farm), "/", _num(server), "/", _num(photo), "_", secret, "_z.jpg"
    )
    thumb = pc.if_else(pa.array(has_thumb), thumb, "")
    return pa.table(
        {
            "ImageID": ids,
            "Subset": subset,
            "OriginalURL": _join(
                "https://farm", _num(farm), ".staticflickr.com/", _num(server), "/", _num(photo), "_", secret, "_o.jpg"
            ),
            "OriginalLandingURL": _join("https://www.flickr.com/photos/", user, "/", _num(photo)),
            "License": pa.array(np.array(LICENSES)[rng.integers(0, 3, size=n)]),
            "AuthorProfileURL": _join("https://www.flickr.com/people/", user, "/"),
            "Author": pa.array(np.array(AUTHORS)[rng.integers(0, len(AUTHORS), size=n)]),
            "Title": pa.array(np.array(TITLES)[rng.integers(0, len(TITLES), size=n)]),
            "OriginalSize": _num(rng.integers(50_000, 9_000_000, size=n)),
            "OriginalMD5": md5,
            "Thumbnail300KURL": thumb,
            "Rotation": rot,
        }
    )


def generate(data: Path, rows: int, boxable: int, chunk: int = 1_000_000) -> None:
    meta = data / "metadata"
    full_path, box_path = meta / "image_ids_and_rotation.csv", meta / "train-images-boxable-with-rotation.csv"
    stamp = meta / f"generated-{rows}-{boxable}.json"
    if stamp.exists():
        return
    meta.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_val, n_test = round(rows * 41_620 / 9_178_275), round(rows * 125_436 / 9_178_275)
    subset_codes = np.zeros(rows, np.int8)
    subset_codes[:n_val] = 1
    subset_codes[n_val : n_val + n_test] = 2
    rng.shuffle(subset_codes)
    train_positions = np.flatnonzero(subset_codes == 0)
    box_positions = np.sort(rng.choice(train_positions, size=boxable, replace=False))
    subset_names = np.array(["train", "validation", "test"])
    opts = pacsv.WriteOptions(include_header=True, quoting_style="needed")
    box_tables = []
    t0 = time.time()
    with pacsv.CSVWriter(
        str(full_path), pa.schema([pa.field(c, pa.string()) for c in COLUMNS]), write_options=opts
    ) as w:
        for start in range(0, rows, chunk):
            stop = min(rows, start + chunk)
            table = _rows(rng, _ids(rng, stop - start), pa.array(subset_names[subset_codes[start:stop]]))
            w.write_table(table)
            sel = box_positions[(box_positions >= start) & (box_positions < stop)] - start
            box_tables.append(table.take(pa.array(sel)))
            print(f"  generated {stop:,}/{rows:,} rows ({time.time() - t0:.0f}s)", file=sys.stderr)
    box = pa.concat_tables(box_tables)
    box = box.take(pa.array(rng.permutation(box.num_rows)))  # the boxable file has its own order
    pacsv.write_csv(box, str(box_path), write_options=opts)
    stamp.write_text(json.dumps({"rows": rows, "boxable": boxable}))


PANDAS_BASELINE = """
import sys, pandas as pd
if len(sys.argv) > 2 and sys.argv[2] == "object":
    pd.set_option("future.infer_string", False)  # the notebook's era: Python object strings
meta = sys.argv[1]
full_set = pd.read_csv(meta + '/image_ids_and_rotation.csv').set_index("ImageID")
target_set = pd.read_csv(meta + '/train-images-boxable-with-rotation.csv').set_index("ImageID")
unused = full_set[(full_set.Subset == 'train') & ~full_set.index.isin(target_set.index)]
train_set = unused[:1200000]
extended_target_set = unused[1200000:]
print(len(target_set), (full_set.Subset == 'validation').sum(), len(train_set), len(extended_target_set),
      train_set.index[0], train_set.index[-1], extended_target_set.index[0], extended_target_set.index[-1])
"""


def run(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GiB, stdout) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed:\n{err}")
    return wall, usage.ru_maxrss / 2**20, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("bench-data/plan"))
    ap.add_argument("--rows", type=int, default=9_178_275)
    ap.add_argument("--boxable", type=int, default=1_743_042)
    ap.add_argument("--oiv4-only", action="store_true", help="skip the pandas baselines")
    ap.add_argument("--repeat", type=int, default=1, help="best of N oiv4 runs")
    args = ap.parse_args()
    generate(args.data, args.rows, args.boxable)
    size = sum(p.stat().st_size for p in (args.data / "metadata").glob("*.csv"))
    print(f"metadata: {size / 1e9:.2f} GB, {args.rows:,} + {args.boxable:,} rows; {os.cpu_count()} cores")

    oiv4 = [sys.executable, "-m", "oiv4", "plan", "--root", str(args.data), "--force"]
    runs = [run(oiv4) for _ in range(max(1, args.repeat))]
    t_oiv4, m_oiv4 = min(r[0] for r in runs), max(r[1] for r in runs)
    summary = json.loads((args.data / "plan" / "summary.json").read_text())
    each = ", ".join(f"{r[0]:.1f}" for r in runs)
    print(f"oiv4 plan : {t_oiv4:7.1f} s (runs: {each})  peak {m_oiv4:5.2f} GiB  counts {summary['counts']}")
    if args.oiv4_only:
        return
    t_pd, m_pd, out = run([sys.executable, "-c", PANDAS_BASELINE, str(args.data / "metadata")])
    print(f"pandas 3 (arrow strings) : {t_pd:7.1f} s  peak {m_pd:5.2f} GiB  counts {out.split()[:4]}")
    t_obj, m_obj, out_obj = run([sys.executable, "-c", PANDAS_BASELINE, str(args.data / "metadata"), "object"])
    print(f"pandas (object strings)  : {t_obj:7.1f} s  peak {m_obj:5.2f} GiB  counts {out_obj.split()[:4]}")
    print(f"ratio pandas-object/oiv4: {t_obj / t_oiv4:.1f}x faster, {m_obj / m_oiv4:.1f}x less memory")
    expected = [str(summary["counts"][s]) for s in ("targets", "validation", "train", "extended_targets")]
    import pyarrow.parquet as pq

    train = pq.read_table(args.data / "plan" / "train.parquet", columns=["ImageID"]).column(0)
    ext = pq.read_table(args.data / "plan" / "extended_targets.parquet", columns=["ImageID"]).column(0)
    expected += [train[0].as_py(), train[-1].as_py(), ext[0].as_py(), ext[-1].as_py()]  # file order kept
    agree = out.split() == expected
    print(
        f"ratio pandas/oiv4: {t_pd / t_oiv4:.1f}x faster, {m_pd / m_oiv4:.1f}x less memory; counts and split points agree: {agree}"
    )
    if not agree:
        raise SystemExit("oiv4 and the pandas baseline disagree on the set sizes")


if __name__ == "__main__":
    main()
