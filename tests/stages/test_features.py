"""`oiv4 features` over a real built root: one vector per stored image in plan order, read back by
embedding-reader; failures recorded with their reason; a kill -9 + resume byte-identical; settings guarded."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from oiv4.contracts.errors import FeaturesError, SettingsChangedError
from oiv4.contracts.layout import LAYOUT
from oiv4.io.checksum import checksum
from oiv4.io.containers import BlobReader
from oiv4.io.ledger import read_set
from oiv4.io.locations import parse_location
from oiv4.io.storage import Storage
from oiv4.run.executor import ExecutorSettings
from oiv4.run.features import features_set
from oiv4.stages.features import FeaturesSettings
from oiv4.stages.features.models import load_model, model_spec
from oiv4.stages.features.preprocess import TINY
from oiv4.stages.features.stage import shard_ledger
from support.tiny_weights import save_tiny_weights

THREAD = ExecutorSettings(kind="thread", workers=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_demo_root):
    return shutil.copytree(tiny_demo_root, tmp_path_factory.mktemp("demo") / "root")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.pth", seed=7)


@pytest.fixture
def root(built, tmp_path):
    dest = tmp_path / "root"
    shutil.copytree(built, dest, ignore=shutil.ignore_patterns("report", "dedup"))
    return dest


def _settings(weights: Path, **kw) -> FeaturesSettings:
    return FeaturesSettings(model="tiny-cnn", weights=str(weights), loader_workers=0, batch_size=8, **kw)


def _ok_rows(storage: Storage, image_set: str) -> list[tuple[int, str, str]]:
    t = read_set(storage, image_set)
    t = t.filter(pc.and_(pc.equal(t["outcome"], "ok"), pc.greater_equal(t["row"], 0)))
    return list(zip(t["row"].to_pylist(), t["image_id"].to_pylist(), t["location"].to_pylist(), strict=True))


def _features_files(root: Path) -> dict[str, bytes]:
    base = root / "features"
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file() and p.parent.name in ("img_emb", "metadata", "checksums")
    }


@pytest.mark.parametrize("image_set", ["targets", "train"])  # zip members of archives; files fetched from URLs
def test_every_stored_image_gets_its_model_vector_in_plan_order_and_embedding_reader_reads_them(
    root, weights, image_set
):
    storage = Storage(str(root))
    summary = features_set(storage, image_set, _settings(weights), THREAD)
    stored = _ok_rows(storage, image_set)
    assert summary.vectors == len(stored) > 10 and not summary.failed and summary.dim == 16

    vecs, ids, rows = [], [], []
    for shard in range(len(list((root / LAYOUT.features_dir("tiny-cnn", image_set) / "img_emb").glob("*.npy")))):
        vecs.append(np.load(root / LAYOUT.features_npy("tiny-cnn", image_set, shard)))
        meta = pq.read_table(root / LAYOUT.features_metadata("tiny-cnn", image_set, shard))
        assert meta.column_names == ["image_id", "row"] and meta.schema.field("row").type == "int64"
        ids += meta["image_id"].to_pylist()
        rows += meta["row"].to_pylist()
    vectors = np.concatenate(vecs)
    assert vectors.dtype == np.float16 and vectors.shape == (len(stored), 16)
    assert rows == [r for r, _, _ in stored] and ids == [i for _, i, _ in stored]  # plan order

    # Each vector is the network applied to that stored image, preprocessed on its own.
    model = load_model(model_spec("tiny-cnn"), weights)
    reader = BlobReader(storage)
    for k in (0, len(stored) - 1):
        crop = TINY.from_bytes(reader.read(parse_location(stored[k][2])))
        with torch.inference_mode():
            want = model(torch.from_numpy(TINY.normalise(crop[None]))).numpy().astype(np.float16)
        np.testing.assert_allclose(vectors[k].astype(np.float32), want[0].astype(np.float32), rtol=2e-3, atol=2e-3)

    from embedding_reader import EmbeddingReader

    base = root / LAYOUT.features_dir("tiny-cnn", image_set)
    er = EmbeddingReader(
        embeddings_folder=str(base / "img_emb"),
        metadata_folder=str(base / "metadata"),
        file_format="parquet_npy",
        meta_columns=["image_id", "row"],
    )
    assert er.count == len(stored) and er.dimension == 16
    got_vecs, got_ids = [], []
    for emb, meta in er(batch_size=10**6, start=0, end=er.count):
        got_vecs.append(emb)
        got_ids += meta["image_id"].tolist()
    assert got_ids == ids
    np.testing.assert_array_equal(np.concatenate(got_vecs), vectors.astype(np.float32))

    # Recorded: the settings, the checksums of the pair, a compacted ledger saying `ok` for every image.
    record = json.loads((root / LAYOUT.features_settings("tiny-cnn", image_set, 0)).read_text())["settings"]
    assert record["model"] == "tiny-cnn" and record["dim"] == 16 and record["dtype"] == "float16"
    assert len(record["weights_sha256"]) == 64 and "center crop 64" in record["preprocessing"]
    sums = json.loads((root / LAYOUT.features_checksums("tiny-cnn", image_set, 0)).read_text())
    assert sums["npy"]["checksum"] == checksum((root / LAYOUT.features_npy("tiny-cnn", image_set, 0)).read_bytes())
    assert set(shard_ledger(storage, "tiny-cnn", image_set, 0)["outcome"].to_pylist()) == {"ok"}
    assert not list((root / "features").rglob("*.parts")) and not list((root / "features").rglob("chunk-*"))

    again = features_set(storage, image_set, _settings(weights), THREAD)
    assert again.vectors == 0 and again.already == len(stored)  # nothing redone


def test_a_damaged_and_a_missing_stored_image_are_recorded_with_their_reason_and_the_rest_get_vectors(root, weights):
    storage = Storage(str(root))
    stored = _ok_rows(storage, "train")
    damaged, missing = Path(root, stored[1][2]), Path(root, stored[4][2])
    data = damaged.read_bytes()
    damaged.write_bytes(data[:400] + bytes(len(data) - 400))  # entropy-coded data zeroed: libjpeg complains
    missing.unlink()
    summary = features_set(storage, "train", _settings(weights), THREAD)
    assert summary.vectors == len(stored) - 2
    led = {r["row"]: r for r in shard_ledger(storage, "tiny-cnn", "train", 0).to_pylist()}
    assert len(led) == len(stored)  # every stored image ends with a vector or a reason
    assert led[stored[4][0]]["outcome"] == "missing_file" and "missing" in led[stored[4][0]]["reason"]
    assert led[stored[1][0]]["outcome"] in ("corrupt_jpeg", "decode_error") and led[stored[1][0]]["reason"]
    meta = pq.read_table(root / LAYOUT.features_metadata("tiny-cnn", "train", 0))
    assert stored[1][0] not in meta["row"].to_pylist() and meta.num_rows == len(stored) - 2


def test_resuming_with_other_weights_or_dtype_is_refused_unless_forced(root, weights, tmp_path):
    storage = Storage(str(root))
    other = save_tiny_weights(tmp_path / "other.pth", seed=8)
    # A shard started (one ledger part recorded) and then stopped: simulated by running, then re-opening shard 0.
    features_set(storage, "validation", _settings(weights), THREAD)
    with pytest.raises(FeaturesError, match=r"finished with other settings \(weights_sha256: was '[0-9a-f]{64}'"):
        features_set(storage, "validation", _settings(other), THREAD)
    with pytest.raises(FeaturesError, match=r"dtype: was 'float16', now 'float32'"):
        features_set(storage, "validation", _settings(weights, dtype="float32"), THREAD)


def test_a_dimension_that_does_not_match_earlier_shards_is_refused(root, weights):
    storage = Storage(str(root))
    rel = LAYOUT.features_npy("tiny-cnn", "targets", 3)
    storage.write_bytes(rel, _npy(np.zeros((2, 32), np.float16)))
    with pytest.raises(FeaturesError, match=r"img_emb_00003.npy holds 32-d vectors but tiny-cnn gives 16-d"):
        features_set(storage, "targets", _settings(weights), THREAD)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _cli(root: Path, weights: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "oiv4", "features", "targets", "--root", str(root), "--model", "tiny-cnn",
        "--weights", str(weights), "--batch-size", "2", *extra,
    ]  # fmt: skip


def test_kill_9_mid_shard_then_resume_is_byte_identical_to_an_uninterrupted_run(built, weights, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for d in (killed, clean):
        shutil.copytree(built, d, ignore=shutil.ignore_patterns("report", "dedup"))
    parts = killed / LAYOUT.features_ledger_parts_dir("tiny-cnn", "targets", 0)
    proc = subprocess.Popen(_cli(killed, weights), start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (parts.exists() and len(list(parts.glob("part-*.parquet"))) >= 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its pool worker and its DataLoader worker, like a lost node
    proc.wait()
    proc.stderr.close()
    recorded = len(list(parts.glob("part-*.parquet")))
    assert recorded >= 3 and not (killed / LAYOUT.features_metadata("tiny-cnn", "targets", 0)).exists()

    status = subprocess.run(
        [sys.executable, "-m", "oiv4", "status", "--root", str(killed)], capture_output=True, text=True
    )
    assert status.returncode == 0 and "features tiny-cnn targets:" in status.stdout
    assert "1 running or interrupted" in status.stdout and "Traceback" not in status.stderr
    sql = subprocess.run(
        [
            sys.executable,
            "-m",
            "oiv4",
            "sql",
            "--root",
            str(killed),
            "--csv",
            "select count(*) from features_tiny_cnn_targets",
        ],
        capture_output=True,
        text=True,
    )
    assert sql.returncode == 0 and int(sql.stdout.split()[-1]) == 2 * recorded, sql.stderr  # batches of 2 recorded

    resumed = subprocess.run(_cli(killed, weights), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    already = int(re.search(r"([\d,]+) already done", resumed.stderr).group(1).replace(",", ""))
    assert already >= 2 * recorded  # the recorded batches were not redone
    whole = subprocess.run(_cli(clean, weights), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    got, want = _features_files(killed), _features_files(clean)
    assert got.keys() == want.keys() and len(got) == 3
    assert [k for k in want if got[k] != want[k]] == []
    led_k = shard_ledger(Storage(str(killed)), "tiny-cnn", "targets", 0).select(["row", "outcome"])
    led_c = shard_ledger(Storage(str(clean)), "tiny-cnn", "targets", 0).select(["row", "outcome"])
    assert led_k.equals(led_c)
    status = subprocess.run(
        [sys.executable, "-m", "oiv4", "status", "--root", str(killed)], capture_output=True, text=True
    )
    assert f"features tiny-cnn targets: {led_c.num_rows:,} vectors, 1 shard(s) done" in status.stdout


def test_an_unfinished_shard_resumed_with_other_weights_is_refused_unless_forced_and_the_override_recorded(
    root, weights, tmp_path
):
    storage = Storage(str(root))
    other = save_tiny_weights(tmp_path / "other.pth", seed=8)
    first = _settings(weights)
    record = root / LAYOUT.features_settings("tiny-cnn", "validation", 0)
    features_set(storage, "validation", first, THREAD)
    old_sha = json.loads(record.read_text())["settings"]["weights_sha256"]
    # Make shard 0 look interrupted: its outputs gone, its settings record kept (as a kill leaves it).
    shutil.rmtree(root / LAYOUT.features_dir("tiny-cnn", "validation") / "ledger")
    for sub in ("img_emb", "metadata", "checksums"):
        shutil.rmtree(root / LAYOUT.features_dir("tiny-cnn", "validation") / sub)
    with pytest.raises(
        SettingsChangedError, match=r"validation shard 0 was started with other settings \(weights_sha256"
    ):
        features_set(storage, "validation", _settings(other), THREAD)
    summary = features_set(storage, "validation", _settings(other, force_settings=True), THREAD)
    assert summary.vectors > 0
    saved = json.loads(record.read_text())
    assert (
        saved["settings"]["weights_sha256"] != old_sha
        and saved["overrides"][0]["previous"]["weights_sha256"] == old_sha
    )


def test_bad_input_is_one_line_with_exit_code_2(built, weights, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "oiv4", "features", *args], capture_output=True, text=True)

    r = str(built)
    unplanned = tmp_path / "unplanned"
    (unplanned / "metadata").mkdir(parents=True)  # an oiv4 root that has not been planned yet
    for args, message in (
        (("targets", "--root", r, "--model", "vgg19"), "unknown model 'vgg19': choose one of vgg16-fc2, resnet50"),
        (("targets", "--root", r, "--model", "tiny-cnn"), "tiny-cnn has no published weights: pass --weights FILE"),
        (
            ("targets", "--root", r, "--model", "tiny-cnn", "--weights", "/no/such.pth"),
            "--weights /no/such.pth: no such",
        ),
        (("train", "--root", str(unplanned), "--model", "tiny-cnn", "--weights", str(weights)), "train is not planned"),
        (("trains", "--root", r), "unknown set 'trains'"),
        (("targets", "--root", r, "--model", "tiny-cnn", "--device", "cuda"), "--device cuda: torch sees no CUDA GPU"),
    ):
        proc = run(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == f"oiv4 features: {proc.stderr.strip().removeprefix('oiv4 features: ')}"
        assert message in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_estimate_counts_the_vectors_still_to_write_and_their_disk(root):
    from oiv4.stages.estimate import VGG16_CPU_IMAGES_PER_CORE_S, estimate

    storage = Storage(str(root))
    est = {f.image_set: f for f in estimate(storage).features}
    stored = len(_ok_rows(storage, "validation"))
    v = est["validation"]
    assert v.images == v.remaining == stored > 0
    assert v.disk_bytes == stored * (4096 * 2 + 24)  # float16 vgg16-fc2 vectors + their metadata row
    assert v.cpu_core_seconds == pytest.approx(stored / VGG16_CPU_IMAGES_PER_CORE_S)
    assert '"features": [' in estimate(storage).to_json()


def test_on_dask_the_pairs_are_the_same_bytes_and_a_changed_byte_is_caught_by_the_recorded_checksums(
    root, weights, tmp_path
):
    from oiv4.stages.features.status import check_pairs

    other = tmp_path / "thread"
    shutil.copytree(root, other)
    features_set(Storage(str(other)), "validation", _settings(weights), THREAD)
    summary = features_set(
        Storage(str(root)), "validation", _settings(weights), ExecutorSettings(kind="dask", workers=1)
    )
    assert summary.vectors == len(_ok_rows(Storage(str(root)), "validation"))
    got, want = _features_files(root), _features_files(other)
    assert got.keys() == want.keys() and [k for k in want if got[k] != want[k]] == []

    storage = Storage(str(root))
    assert check_pairs(storage, "tiny-cnn", "validation") == []
    npy = root / LAYOUT.features_npy("tiny-cnn", "validation", 0)
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0x01  # one bit of the last vector
    npy.write_bytes(bytes(data))
    (root / LAYOUT.features_metadata("tiny-cnn", "validation", 0)).unlink()
    assert check_pairs(storage, "tiny-cnn", "validation") == [
        f"{LAYOUT.features_npy('tiny-cnn', 'validation', 0)}: bytes differ from the checksum recorded when the shard finished",
        f"{LAYOUT.features_metadata('tiny-cnn', 'validation', 0)}: missing",
    ]
