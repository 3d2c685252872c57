"""`oiv4 neighbors`: exact ground truth equal to a numpy brute force, ties included, resumable after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from oiv4.cli import app
from oiv4.stages.neighbors import SearchStats, exact_distances, knn_block
from support.feature_shards import write_features

MODEL = "vgg16-fc2"


def brute_force(q: np.ndarray, x: np.ndarray, k: int, metric: str, exclude: set[tuple[int, int]]) -> tuple:
    d = exact_distances(q[:, None, :], x[None, :, :], metric)
    for a, b in exclude:
        d[a, b] = np.inf
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), d.shape), d), axis=1)[:, :k]
    return order, np.take_along_axis(d, order, 1)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_blocked_search_equals_brute_force_with_many_ties(metric: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 3, (400, 6)).astype(np.float16)
    q = rng.integers(-2, 3, (30, 6)).astype(np.float16)
    k = 70  # larger than a database block of 33
    stats = SearchStats()
    pos, dist = knn_block(q, lambda a, b: x[a:b], len(x), k, metric, 33, stats=stats)
    ref_pos, ref_dist = brute_force(q, x, k, metric, set())
    assert np.array_equal(pos, ref_pos)
    assert np.array_equal(dist, ref_dist)
    # Integer vectors tie at the cut in l2 and ip (cosine divides by norms that mostly differ): there the
    # exact second pass decided those queries.
    assert stats.widened > 0 or metric == "cosine"


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_distinct_distances_are_decided_by_the_candidates_alone(metric: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 24)).astype(np.float16)
    q = rng.standard_normal((50, 24)).astype(np.float16)
    stats = SearchStats()
    pos, dist = knn_block(q, lambda a, b: x[a:b], len(x), 10, metric, 700, stats=stats)
    ref_pos, ref_dist = brute_force(q, x, 10, metric, set())
    assert np.array_equal(pos, ref_pos)
    assert np.array_equal(dist, ref_dist)
    assert stats.widened == 0  # no near-tie at the cut: one faiss pass and one float64 re-rank


def test_ties_straddling_the_cut_widen_and_keep_the_lowest_positions() -> None:
    # 5 vectors at distance 1, 60 tied at distance 4 (scattered over every block), the rest at 9 or more:
    # with k = 10 the cut falls inside the tie, faiss keeps an arbitrary subset of it, and only the widening
    # pass can return the 5 tied vectors with the lowest database positions.
    rng = np.random.default_rng(6)
    d = 8
    x = np.zeros((2000, d), np.float32)
    x[:, 0] = 3.0 + rng.integers(0, 3, 2000)
    perm = rng.permutation(2000)
    near, tied = perm[:5], perm[5:65]
    x[near, 0] = 1.0
    x[tied, 0] = 2.0
    q = np.zeros((3, d), np.float32)
    stats = SearchStats()
    pos, dist = knn_block(q, lambda a, b: x[a:b], len(x), 10, "l2", 250, stats=stats)
    ref_pos, ref_dist = brute_force(q, x, 10, "l2", set())
    assert np.array_equal(pos, ref_pos) and np.array_equal(dist, ref_dist)
    assert sorted(pos[0, 5:]) == sorted(np.sort(tied)[:5].tolist())
    assert stats.widened == 3


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_zero_vectors_in_queries_and_database(metric: str) -> None:
    # A zero vector's cosine distance to anything is 1 by definition, though normalising leaves it at the
    # origin, where faiss's squared distances would put it at 1 from every unit vector (0.5 in cosine): taken
    # at that value, zero database vectors would crowd the candidates and force the exact rescan.
    rng = np.random.default_rng(8)
    x = rng.standard_normal((900, 12)).astype(np.float32)
    x[rng.choice(900, 40, replace=False)] = 0
    q = rng.standard_normal((20, 12)).astype(np.float32)
    stats = SearchStats()
    pos, dist = knn_block(q, lambda a, b: x[a:b], len(x), 50, metric, 128, tile_queries=8, stats=stats)
    ref_pos, ref_dist = brute_force(q, x, 50, metric, set())
    assert np.array_equal(pos, ref_pos) and np.array_equal(dist, ref_dist)
    if metric == "cosine":  # (l2 and ip at 12-d have a few genuine near-ties at the cut)
        assert stats.widened == 0
    q[[0, 7, 19]] = 0  # every distance of a zero query ties (cosine: 1), so those three are searched exactly
    pos, dist = knn_block(q, lambda a, b: x[a:b], len(x), 50, metric, 128, tile_queries=8, stats=stats)
    ref_pos, ref_dist = brute_force(q, x, 50, metric, set())
    assert np.array_equal(pos, ref_pos) and np.array_equal(dist, ref_dist)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_answer_does_not_depend_on_block_or_tile_sizes(metric: str) -> None:
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((2500, 40)) * rng.uniform(0.1, 10, (2500, 1))).astype(np.float16)
    q = (rng.standard_normal((70, 40)) * rng.uniform(0.1, 10, (70, 1))).astype(np.float16)
    runs = [knn_block(q, lambda a, b: x[a:b], len(x), 25, metric, rows, tile_queries=t) for rows, t in
            [(97, 5), (2500, 70), (1024, 33)]]  # fmt: skip
    ref_pos, ref_dist = brute_force(q, x, 25, metric, set())
    for pos, dist in runs:
        assert np.array_equal(pos, ref_pos) and np.array_equal(dist, ref_dist)


def test_exclusions_beyond_the_first_k() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1500, 16)).astype(np.float32)
    q = rng.standard_normal((4, 16)).astype(np.float32)
    k = 10
    order, _ = brute_force(q, x, 40, "l2", set())
    exclude = {(0, int(p)) for p in order[0, :13]}  # more exclusions than k: query 0's answer is its 14th..23rd
    exclude |= {(1, int(p)) for p in order[1, 15:22]}  # past the cut: query 1's answer does not change
    exclude |= {(2, int(p)) for p in order[2, [0, 4, 9, 10]]}  # inside and at the cut
    ex = np.array(sorted(exclude), dtype=np.int64).T
    stats = SearchStats()
    pos, dist = knn_block(q, lambda a, b: x[a:b], len(x), k, "l2", 400, (ex[0], ex[1]), stats=stats)
    ref_pos, ref_dist = brute_force(q, x, k, "l2", exclude)
    assert np.array_equal(pos, ref_pos) and np.array_equal(dist, ref_dist)
    assert np.array_equal(pos[0], order[0, 13:23]) and np.array_equal(pos[1], order[1, :10])
    assert stats.widened == 0


def test_without_faiss_the_command_names_the_neighbors_extra(tmp_path) -> None:
    rng = np.random.default_rng(8)
    write_features(tmp_path, MODEL, "targets", rng.standard_normal((50, 4)).astype(np.float16))
    write_features(tmp_path, MODEL, "validation", rng.standard_normal((5, 4)).astype(np.float16))
    args = ["oiv4", "neighbors", "--root", str(tmp_path), "--queries", "validation", "--database", "targets"]
    script = f"import sys\nsys.modules['faiss'] = None\nsys.argv = {[*args, '--k', '3']!r}\n"
    script += "from oiv4.cli import main\nmain()\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "oiv4 neighbors: the exact kNN search needs the [neighbors] extra: in the oiv4 clone, pip install "
        "'.[neighbors]'\n"
    )
    assert not (tmp_path / "neighbors" / MODEL / "validation-targets.parquet").exists()


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_cli_several_database_sets_never_return_the_query(tmp_path, metric: str) -> None:
    rng = np.random.default_rng(2)
    t = rng.integers(-3, 4, (120, 8)).astype(np.float16)
    v = rng.integers(-3, 4, (40, 8)).astype(np.float16)
    tid = write_features(tmp_path, MODEL, "targets", t, 32)
    vid = write_features(tmp_path, MODEL, "validation", v, 32)
    r = CliRunner().invoke(
        app,
        [
            "neighbors",
            "--root",
            str(tmp_path),
            "--queries",
            "validation",
            "--database",
            "targets,validation",
            "--k",
            "25",
            "--metric",
            metric,
            "--memory-gb",
            "0.5",
            "--part-queries",
            "16",
        ],
    )
    assert r.exit_code == 0, r.output
    name = "validation-targets+validation" + ("" if metric == "l2" else f".{metric}")
    got = pq.read_table(tmp_path / "neighbors" / MODEL / f"{name}.parquet")
    x = np.concatenate([t, v])
    ids = tid + vid
    ref_pos, ref_dist = brute_force(v, x, 25, metric, {(i, 120 + i) for i in range(40)})
    assert got["neighbor_id"].to_pylist() == [ids[p] for p in ref_pos.ravel()]
    assert got["distance"].to_pylist() == ref_dist.ravel().tolist()
    assert tid[5] not in got["neighbor_id"].to_pylist()[:10] and tid[7] not in got["neighbor_id"].to_pylist()[30:40]
    assert all(a != b for a, b in zip(got["query_id"].to_pylist(), got["neighbor_id"].to_pylist(), strict=True))


def test_bad_input_is_one_line(tmp_path) -> None:
    write_features(tmp_path, MODEL, "targets", np.zeros((10, 4), np.float16))
    write_features(tmp_path, MODEL, "validation", np.zeros((10, 5), np.float16))
    run = CliRunner().invoke
    base = ["neighbors", "--root", str(tmp_path), "--queries", "validation"]
    r = run(app, [*base, "--database", "train"])
    assert r.exit_code == 3 and "oiv4 features train --model vgg16-fc2" in r.output
    r = run(app, [*base, "--database", "targets"])
    assert r.exit_code == 3 and "5-d" in r.output and "4-d" in r.output
    r = run(app, [*base, "--database", "validation", "--k", "50"])
    assert r.exit_code == 3 and "larger than the database" in r.output
    r = run(app, [*base, "--database", "validation", "--k", "2", "--exclude-duplicates"])
    assert r.exit_code == 3 and "oiv4 dedup" in r.output


def test_a_budget_below_the_runtime_is_refused_not_exceeded(tmp_path) -> None:
    write_features(tmp_path, MODEL, "targets", np.ones((10, 4), np.float16))
    base = ["neighbors", "--root", str(tmp_path), "--queries", "targets", "--database", "targets", "--k", "3"]
    r = CliRunner().invoke(app, [*base, "--memory-gb", "0.2"])
    assert r.exit_code == 2, r.output
    assert "--memory-gb 0.2 is below what this search needs, 0.26" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "neighbors").exists()


def test_resume_after_kill_is_byte_identical(tmp_path) -> None:
    rng = np.random.default_rng(3)
    write_features(tmp_path, MODEL, "targets", rng.standard_normal((3000, 16)).astype(np.float16), 500)
    write_features(tmp_path, MODEL, "validation", rng.standard_normal((600, 16)).astype(np.float16), 500)
    args = [
        sys.executable,
        "-m",
        "oiv4",
        "neighbors",
        "--root",
        str(tmp_path),
        "--queries",
        "validation",
        "--database",
        "targets",
        "--k",
        "20",
        "--memory-gb",
        "0.5",
        "--part-queries",
        "16",
    ]
    parts = tmp_path / "neighbors" / MODEL / "validation-targets.parts"
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (parts.exists() and len(list(parts.glob("part-*.parquet"))) >= 2):
        time.sleep(0.01)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = list(parts.glob("part-*.parquet"))
    assert done  # the kill came after some blocks were finished and before the final file
    again = subprocess.run(args, check=True, capture_output=True, text=True)
    assert f"({len(done)} finished query blocks kept)" in " ".join(again.stderr.split())
    out = tmp_path / "neighbors" / MODEL / "validation-targets.parquet"
    resumed = out.read_bytes()
    out.unlink()
    subprocess.run([*args], check=True, stderr=subprocess.DEVNULL)
    assert out.read_bytes() == resumed


def test_exclude_duplicates_drops_the_pairs_dedup_found(tmp_path) -> None:
    rng = np.random.default_rng(4)
    t = rng.integers(-2, 3, (60, 4)).astype(np.float16)
    v = rng.integers(-2, 3, (10, 4)).astype(np.float16)
    t[5], t[7] = v[0], v[3]  # exact copies: without the exclusion each would be its query's first neighbour
    tid = write_features(tmp_path, MODEL, "targets", t, 25)
    vid = write_features(tmp_path, MODEL, "validation", v, 25)
    (tmp_path / "dedup").mkdir()
    # One pair in each orientation: (validation 0, targets 5) and (targets 7, validation 3).
    pq.write_table(
        pa.table(
            {
                "id_a": [vid[0], tid[7]],
                "set_a": ["validation", "targets"],
                "id_b": [tid[5], vid[3]],
                "set_b": ["targets", "validation"],
                "distance": [0, 2],
                "kind": ["exact", "near"],
            }
        ),
        tmp_path / "dedup" / "pairs.parquet",
    )
    args = [
        "neighbors",
        "--root",
        str(tmp_path),
        "--queries",
        "validation",
        "--database",
        "targets",
        "--k",
        "10",
        "--exclude-duplicates",
    ]
    assert CliRunner().invoke(app, args).exit_code == 0
    got = pq.read_table(tmp_path / "neighbors" / MODEL / "validation-targets.nodup.parquet")
    ref_pos, ref_dist = brute_force(v, t, 10, "l2", {(0, 5), (3, 7)})
    assert got["neighbor_id"].to_pylist() == [tid[p] for p in ref_pos.ravel()]
    assert got["distance"].to_pylist() == ref_dist.ravel().tolist()
    assert tid[5] not in got["neighbor_id"].to_pylist()[:10] and tid[7] not in got["neighbor_id"].to_pylist()[30:40]


def test_peak_memory_stays_under_the_budget_on_a_database_larger_than_the_rest_of_it(tmp_path) -> None:
    # 0.3 GiB budget; the runtime alone is ~0.2 GiB, the database 0.15 GiB: holding it whole would exceed.
    rng = np.random.default_rng(9)
    for lo in range(0, 300_000, 100_000):
        block = rng.standard_normal((100_000, 128), dtype=np.float32)
        shard = lo // 100_000
        ids = [f"c{i:015x}" for i in range(lo, lo + 100_000)]
        write_features(tmp_path / f"s{shard}", MODEL, "targets", block, 100_000, ids)
        for sub in ("img_emb", "metadata"):
            src = tmp_path / f"s{shard}" / "features" / MODEL / "targets" / sub
            dst = tmp_path / "features" / MODEL / "targets" / sub
            dst.mkdir(parents=True, exist_ok=True)
            for f in src.iterdir():
                f.rename(dst / f.name.replace("00000", f"{shard:05d}"))
    write_features(tmp_path, MODEL, "validation", rng.standard_normal((200, 128), dtype=np.float32))
    script = (
        "import sys\nfrom oiv4.cli import main\n"
        f"sys.argv = ['oiv4', 'neighbors', '--root', {str(tmp_path)!r}, '--queries', 'validation', '--database',"
        " 'targets', '--k', '50', '--memory-gb', '0.3']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    peak_gib = int(done.stdout.split()[-1]) / 2**20
    assert peak_gib < 0.3, peak_gib
    got = pq.read_table(tmp_path / "neighbors" / MODEL / "validation-targets.parquet")
    assert got.num_rows == 200 * 50
