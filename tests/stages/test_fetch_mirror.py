"""The fetch stage against the local mirror (real HTTP on 127.0.0.1): outcomes, pixels, layouts, retries."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import oiv4
from oiv4.contracts.errors import COMPLETE_WITH_FAILURES, FetchError, HostileIdError
from oiv4.contracts.layout import LAYOUT
from oiv4.io.checksum import checksum
from oiv4.io.fingerprint import hamming, phash_stored
from oiv4.io.manifest import read_manifest
from oiv4.io.storage import Storage
from oiv4.run.fetch import fetch_set
from oiv4.stages.fetch.transform import fit_size
from oiv4_mirror import ImageKind, Misbehaviour
from support.fetch_env import (
    EXECUTOR,
    SETTINGS,
    copy_root,
    files_under,
    ledger_rows,
    planned_root,
    temp_files,
    write_manifest,
)

URL_SETS = ("train", "extended_targets")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with planned_root(tmp_path_factory.mktemp("plan")) as (mirror, template):
        yield mirror, template


@pytest.fixture(scope="module")
def fetched(env, tmp_path_factory):
    """Both URL sets fetched once into the default layout (read-only for the tests that use it)."""
    mirror, template = env
    storage = copy_root(template, tmp_path_factory.mktemp("fetched"))
    summaries = {s: fetch_set(storage, s, SETTINGS, EXECUTOR) for s in URL_SETS}
    return mirror, storage, summaries


def _image(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        return np.asarray(im, dtype=np.float64)


def test_every_row_ends_in_exactly_the_outcome_its_misbehaviour_calls_for(fetched):
    mirror, storage, summaries = fetched
    universe = mirror.universe
    seen: Counter[str] = Counter()
    for image_set in URL_SETS:
        planned = read_manifest(storage, image_set, ["ImageID"])["ImageID"].to_pylist()
        rows = ledger_rows(storage, image_set)
        assert sorted(r["image_id"] for r in rows) == sorted(planned)  # one row per image, none missing
        for r in rows:
            info = universe.info(r["image_id"])
            assert r["outcome"] == universe.expected(r["image_id"]), (info.misbehaviour, r["reason"])
            assert r["reason"], r
            seen[info.misbehaviour.value] += 1
        assert summaries[image_set].remaining == 0
    assert set(seen) == {m.value for m in Misbehaviour}  # the universe exercised every behaviour


def test_ok_rows_record_the_checksum_of_the_stored_file_and_a_phash_and_others_neither(fetched):
    _, storage, _ = fetched
    rows = [r for s in URL_SETS for r in ledger_rows(storage, s)]
    ok = [r for r in rows if r["outcome"] == "ok"]
    assert ok and len(ok) < len(rows)
    for r in ok:
        assert r["checksum"] == checksum(storage.read_bytes(r["location"]))
        assert r["phash"] is not None
        # the hash of the picture as stored (upright, shrunk): re-hashing the stored file agrees within a few bits
        assert int(hamming(r["phash"], phash_stored(storage.read_bytes(r["location"])))[()]) <= 4
    assert all(r["checksum"] is None and r["phash"] is None for r in rows if r["outcome"] != "ok")
    assert len({r["phash"] for r in ok}) == len(ok)  # distinct photos, distinct hashes


def test_a_damaged_jpeg_whose_md5_matches_is_corrupt_not_ok(fetched):
    mirror, storage, _ = fetched
    damaged = [
        r
        for s in URL_SETS
        for r in ledger_rows(storage, s)
        if r["image_id"] in set(mirror.universe.ids_with("corrupt_jpeg"))
    ]
    assert damaged
    for r in damaged:
        assert r["outcome"] == "corrupt_jpeg" and "Corrupt JPEG data" in r["reason"], r["reason"]
        assert not storage.exists(LAYOUT.image(r["set"], r["image_id"]))


def test_failures_say_why_and_how_hard_we_tried(fetched):
    mirror, storage, _ = fetched
    by_kind = {mirror.universe.info(r["image_id"]).misbehaviour: r for s in URL_SETS for r in ledger_rows(storage, s)}
    assert "photo_unavailable" in by_kind[Misbehaviour.placeholder]["reason"]
    assert by_kind[Misbehaviour.placeholder]["bytes_downloaded"] == 0  # recognised by its redirect, not fetched
    assert by_kind[Misbehaviour.rate_limited]["attempts"] == 3  # 429, 429 (Retry-After honoured), then 200
    assert by_kind[Misbehaviour.unavailable]["attempts"] == 3
    assert by_kind[Misbehaviour.server_error]["attempts"] == 3 and "500" in by_kind[Misbehaviour.server_error]["reason"]
    assert by_kind[Misbehaviour.forbidden]["attempts"] == 1  # a 403 is not retried
    assert "deadline" in by_kind[Misbehaviour.slow_timeout]["reason"]
    assert "cut short" in by_kind[Misbehaviour.truncated]["reason"]
    assert "text/html" in by_kind[Misbehaviour.wrong_content_type]["reason"]
    assert "30000x30000" in by_kind[Misbehaviour.decompression_bomb]["reason"]


def test_stored_images_are_upright_rgb_jpegs_that_fit_1024(fetched):
    mirror, storage, _ = fetched
    universe = mirror.universe
    rows = [r for s in URL_SETS for r in ledger_rows(storage, s) if r["outcome"] == "ok"]
    kinds = Counter()
    for r in rows:
        info = universe.info(r["image_id"])
        kinds[info.kind] += 1
        assert r["location"] == LAYOUT.image(r["set"], r["image_id"])
        px = _image(storage.local_path(r["location"]))
        want_w, want_h = fit_size(info.width, info.height, 1024)  # the upright size, shrunk, never enlarged
        assert (px.shape[1], px.shape[0]) == (want_w, want_h) == (r["stored_width"], r["stored_height"])
        if info.kind not in (ImageKind.png_i16, ImageKind.png_rgba):
            # The red marker of the upright picture is top-left again whatever Rotation the original had.
            assert px[2, 2, 0] > 180 and px[2, 2, 1] < 90 and px[2, 2, 2] < 90, (info.kind, info.rotation)
        # Colour modes came out right: close to the mirror's own rendering of the same scene at this size.
        ref = np.asarray(Image.open(io.BytesIO(universe.small_image(r["image_id"]))).convert("RGB"), np.float64)
        ref = np.rot90(ref, k=int(info.rotation // 90)) if info.rotation == info.rotation else ref
        if info.kind is ImageKind.png_i16:
            grey, luma = px.mean(axis=2), ref @ np.array([0.299, 0.587, 0.114])  # the mirror made it with convert("L")
            assert np.abs(grey - luma).mean() < 12  # 16-bit scaled to 8 bits, not clipped to white
            assert grey.std() > 10
        elif info.kind is ImageKind.png_rgba:
            assert (px >= ref - 12).mean() > 0.95  # composited on white: never darker than the photo
            assert px.mean() > ref.mean() + 10
        else:
            assert np.abs(px - ref).mean() < 14, info.kind  # RGB, palette, GIF and (inverted Adobe) CMYK
    assert set(kinds) == set(ImageKind)


def test_a_second_run_finds_nothing_to_do_and_rewrites_nothing(fetched):
    _, storage, _ = fetched
    root = Path(storage.root)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*.jpg")}
    for image_set in URL_SETS:
        again = fetch_set(storage, image_set, SETTINGS, EXECUTOR)
        assert again.shards_run == 0 and again.done == 0 and again.remaining == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*.jpg")} == before
    assert temp_files(root) == []


def test_byte_cap_refuses_early_and_retry_failed_redoes_only_what_it_names(env, tmp_path):
    mirror, template = env
    storage = copy_root(template, tmp_path)
    cap = 150_000
    capped = dataclasses.replace(SETTINGS, http=dataclasses.replace(SETTINGS.http, max_bytes=cap))
    snapshots = []
    first = fetch_set(storage, "train", capped, EXECUTOR, progress=snapshots.append, progress_interval=0.2)
    rows = {r["row"]: r for r in ledger_rows(storage, "train")}
    u = mirror.universe
    never_200 = {Misbehaviour.placeholder, Misbehaviour.forbidden, Misbehaviour.not_found, Misbehaviour.gone}
    never_200.add(Misbehaviour.server_error)
    big = {
        n
        for n, r in rows.items()
        if u.info(r["image_id"]).misbehaviour not in never_200 and u.original_meta(r["image_id"])[0] > cap
    }
    assert big and {n for n, r in rows.items() if r["outcome"] == "too_large"} == big
    assert all(rows[n]["bytes_downloaded"] == 0 and "Content-Length" in rows[n]["reason"] for n in big)
    assert snapshots[-1].done == first.done == 30 and snapshots[-1].outcomes["too_large"] == len(big)

    retry = dataclasses.replace(SETTINGS, retry_failed=("too_large",))
    second = fetch_set(storage, "train", retry, EXECUTOR)
    after = {r["row"]: r for r in ledger_rows(storage, "train")}
    assert second.done == len(big)
    for n, r in after.items():
        if n in big:
            assert r["outcome"] == u.expected(r["image_id"]) and r["started_at"] > rows[n]["started_at"]
        else:
            assert r == rows[n]  # other failures (http_404, timeout, ...) were left alone


def test_hostile_ids_are_recorded_as_invalid_and_never_become_paths(env, tmp_path):
    mirror, _ = env
    good = next(i for i in mirror.universe.url_set_ids() if mirror.universe.expected(i) == "ok")
    real = mirror.universe.row(good, mirror.base_url)
    hostile = ["../../../../../tmp/oiv4-evil", "ABCDEF0123456789", "0123456789abcdef/../x", "/etc/passwd", ""]
    root = tmp_path / "root"
    storage = Storage(str(root))
    write_manifest(storage, "train", [{**real, "ImageID": h} for h in hostile] + [real])
    fetch_set(storage, "train", SETTINGS, EXECUTOR)
    rows = ledger_rows(storage, "train")
    assert [r["outcome"] for r in rows] == ["invalid_id"] * len(hostile) + ["ok"]
    assert all("refusing ImageID" in r["reason"] and r["attempts"] == 0 for r in rows[:-1])
    stored = sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*") if p.is_file())
    assert stored == [LAYOUT.image("train", good)]
    assert not Path("/tmp/oiv4-evil.jpg").exists() and not list(tmp_path.glob("*.jpg"))
    for h in hostile:
        with pytest.raises(HostileIdError):
            LAYOUT.image("train", h)


def test_fallback_thumbnail_is_used_only_when_asked_and_is_marked_unverified(env, tmp_path):
    mirror, _ = env
    u = mirror.universe
    ok_id = next(i for i in u.url_set_ids() if u.expected(i) == "ok" and u.info(i).thumbnail_path)
    gone_id = next(i for i in u.ids_with(Misbehaviour.placeholder) if u.info(i).thumbnail_path)
    donor = u.row(ok_id, mirror.base_url)
    rows = [
        # original deleted (404), thumbnail still served
        {**donor, "ImageID": "00000000000000aa", "OriginalURL": mirror.base_url + "/farm1/1/deleted_o.jpg"},
        u.row(gone_id, mirror.base_url),  # placeholder, and its thumbnail is gone too
        {**donor, "ImageID": "00000000000000bb", "OriginalURL": mirror.base_url + "/x_o.jpg", "Thumbnail300KURL": ""},
    ]
    storage = Storage(str(tmp_path / "root"))
    write_manifest(storage, "train", rows)
    fetch_set(storage, "train", SETTINGS, EXECUTOR)
    assert [r["outcome"] for r in ledger_rows(storage, "train")] == ["http_404", "placeholder", "http_404"]

    with_thumbs = dataclasses.replace(SETTINGS, fallback_thumbnail=True, retry_failed=("all",))
    fetch_set(storage, "train", with_thumbs, EXECUTOR)
    a, b, c = ledger_rows(storage, "train")
    assert (a["outcome"], a["source"], a["url"]) == ("ok", "thumbnail", donor["Thumbnail300KURL"])
    assert "unverified" in a["reason"] and "original gone (http_404" in a["reason"]
    stored = Image.open(storage.local_path(a["location"]))
    assert max(stored.size) <= u.spec.thumbnail_max_side
    assert b["outcome"] == "placeholder" and "thumbnail fallback failed too" in b["reason"]
    assert c["outcome"] == "http_404" and "no Thumbnail300KURL" in c["reason"]


@pytest.mark.parametrize("layout", ["zip", "webdataset"])
def test_archive_layouts_hold_exactly_the_ok_images_byte_identical_to_the_folder_layout(env, fetched, tmp_path, layout):
    _, template = env
    _, folder_storage, _ = fetched
    storage = copy_root(template, tmp_path)
    settings = dataclasses.replace(SETTINGS, layout=layout)
    fetch_set(storage, "train", settings, EXECUTOR)
    rows = ledger_rows(storage, "train")
    ok = [r for r in rows if r["outcome"] == "ok"]
    by_shard: dict[int, list[str]] = {}
    for r in ok:
        by_shard.setdefault(r["shard"], []).append(r["image_id"])
    plan = {r["ImageID"]: r for r in read_manifest(storage, "train").to_pylist()}
    for shard, ids in by_shard.items():
        if layout == "zip":
            path = storage.local_path(LAYOUT.shard_zip("train", shard))
            with zipfile.ZipFile(path) as zf:
                assert zf.namelist() == [f"{i}.jpg" for i in ids]  # manifest order
                assert zf.testzip() is None
                members = {n.removesuffix(".jpg"): zf.read(n) for n in zf.namelist()}
        else:
            path = storage.local_path(LAYOUT.shard_tar("train", shard))
            with tarfile.open(path) as tf:
                assert tf.getnames() == [f"{i}.{ext}" for i in ids for ext in ("jpg", "json")]
                members = {n.removesuffix(".jpg"): tf.extractfile(n).read() for n in tf.getnames() if n.endswith("jpg")}
                for i in ids:
                    meta = json.loads(tf.extractfile(f"{i}.json").read())
                    assert meta["ImageID"] == i and meta["OriginalMD5"] == plan[i]["OriginalMD5"]
        for i, data in members.items():
            assert data == folder_storage.read_bytes(LAYOUT.image("train", i))
        recorded = {r["image_id"]: r["checksum"] for r in ok if r["shard"] == shard}
        assert recorded == {i: checksum(data) for i, data in members.items()}  # of the member bytes
    assert {r["location"] for r in ok} == {
        f"{LAYOUT.shard_zip('train', r['shard'])}:{r['image_id']}.jpg"
        if layout == "zip"
        else f"{LAYOUT.shard_tar('train', r['shard'])}:{r['image_id']}"
        for r in ok
    }
    assert not (tmp_path / "train" / "staging").exists() and temp_files(tmp_path) == []
    ds = oiv4.open(str(tmp_path))
    assert all(ds["train"].read_bytes(r["image_id"]) == members_any(storage, r) for r in ok[:5])
    # A layout is chosen once per set: asking for another one later is refused before any work.
    with pytest.raises(FetchError, match="layout"):
        fetch_set(storage, "train", SETTINGS, EXECUTOR)


def members_any(storage, r) -> bytes:
    container, _, member = r["location"].partition(":")
    path = storage.local_path(container)
    if container.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return zf.read(member)
    with tarfile.open(path) as tf:
        return tf.extractfile(member + ".jpg").read()


def test_cli_status_and_fetch_explain_themselves(fetched, tmp_path):
    _, storage, _ = fetched
    cli = [sys.executable, "-m", "oiv4"]
    status = subprocess.run([*cli, "status", "--root", storage.root], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    for word in ("train", "extended_targets", "ok", "http_404", "placeholder", "timeout", "planned"):
        assert word in status.stdout
    again = subprocess.run(
        [*cli, "fetch", "train", "--root", storage.root, "--no-progress", "--allow-private-networks"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == COMPLETE_WITH_FAILURES, again.stderr  # every row has its outcome; some are failures
    assert "0 of 2 shards had work" in again.stdout
    before = {r["row"]: r for r in ledger_rows(storage, "train")}
    retry = subprocess.run(
        [
            *cli,
            "fetch",
            "train",
            "http_404",
            "--retry-failed",
            "--root",
            storage.root,
            "--no-progress",
            "--allow-private-networks",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert retry.returncode == COMPLETE_WITH_FAILURES, retry.stderr  # every row has its outcome; some are failures
    after = {r["row"]: r for r in ledger_rows(storage, "train")}
    redone = {n for n in after if after[n]["started_at"] != before[n]["started_at"]}
    assert redone and redone == {n for n, r in before.items() if r["outcome"] == "http_404"}
    assert all(after[n]["outcome"] == "http_404" for n in redone)  # still gone
    wrong = subprocess.run([*cli, "fetch", "targets", "--root", storage.root], capture_output=True, text=True)
    assert wrong.returncode == 2 and "oiv4 archives" in wrong.stderr and "Traceback" not in wrong.stderr
    unplanned = subprocess.run([*cli, "fetch", "train", "--root", str(tmp_path)], capture_output=True, text=True)
    assert unplanned.returncode == 2 and "oiv4 plan" in unplanned.stderr and "Traceback" not in unplanned.stderr
    assert files_under(tmp_path) == {}
