"""The local OpenImages mirror: CSV schema, served bytes, every misbehaviour, Range, archives, determinism."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import math
import tarfile
import zlib
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
import requests
from PIL import Image

from oiv4.contracts.schema import COLUMNS, MD5_B64_RE, Outcome, is_valid_image_id
from oiv4_mirror import ImageKind, MirrorHandle, MirrorProcess, Misbehaviour, Universe, UniverseSpec, start_mirror
from oiv4_mirror.universe import md5_b64

# Small pictures and a short trickle keep the module fast; 300 rows give every misbehaviour >= 1 row.
SPEC = UniverseSpec(seed=7, n_images=300, megapixels=(0.05, 0.2), archive_max_side=256, trickle_seconds=3.0)


@pytest.fixture(scope="module")
def mirror() -> Iterator[MirrorHandle]:
    with start_mirror(SPEC) as handle:
        yield handle


def _get(url: str, **kwargs: object) -> requests.Response:
    return requests.get(url, timeout=30, **kwargs)  # type: ignore[arg-type]


def _parse(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def _row(mirror: MirrorHandle, image_id: str) -> dict:
    return mirror.universe.row(image_id, mirror.base_url)


def test_csvs_have_the_real_12_columns_quoting_and_file_order(mirror: MirrorHandle) -> None:
    header, full = _parse(_get(mirror.metadata_base_url + "image_ids_and_rotation.csv").content)
    box_header, boxable = _parse(
        _get(mirror.metadata_base_url + "train/train-images-boxable-with-rotation.csv").content
    )
    assert tuple(header) == COLUMNS == tuple(box_header)
    assert len(full) == SPEC.n_images
    ids = [r["ImageID"] for r in full]
    assert all(is_valid_image_id(i) for i in ids) and len(set(ids)) == len(ids)
    assert ids != sorted(ids), "the real files are not sorted by ImageID"
    assert {r["Subset"] for r in full} == {"train", "validation", "test"}
    assert sum(r["Subset"] == "train" for r in full) > len(full) // 2

    by_id = {r["ImageID"]: r for r in full}
    box_ids = [r["ImageID"] for r in boxable]
    assert box_ids == mirror.universe.boxable_ids()
    assert all(by_id[r["ImageID"]] == r for r in boxable), "boxable rows repeat the full file's rows"
    assert {by_id[i]["Subset"] for i in box_ids} == {"train"}
    full_order = [i for i in ids if i in set(box_ids)]
    assert box_ids != full_order, "the boxable file has its own order"

    titles_and_authors = [r["Title"] + r["Author"] for r in full]
    assert any("," in t for t in titles_and_authors)
    assert any('"' in t for t in titles_and_authors)
    assert any(not t.isascii() for t in titles_and_authors)
    assert all(MD5_B64_RE.match(r["OriginalMD5"]) for r in full)
    assert all(r["OriginalURL"].startswith(mirror.base_url + "/farm") for r in full)
    assert {r["Rotation"] for r in full} == {"0.0", "90.0", "180.0", "270.0", ""}
    assert any(r["Thumbnail300KURL"] == "" for r in full)
    assert all(r["OriginalSize"].isdigit() for r in full)


def test_good_rows_serve_exactly_the_bytes_the_csv_describes(mirror: MirrorHandle) -> None:
    universe = mirror.universe
    good = [i for i in universe.images if i.misbehaviour is Misbehaviour.none]
    assert {i.role for i in good} == {"targets", "url", "validation", "test"}
    with requests.Session() as session:  # keep-alive, as a real fetcher would
        for info in good:
            row = _row(mirror, info.image_id)
            resp = session.get(row["OriginalURL"], timeout=30)
            assert resp.status_code == 200
            assert resp.headers["Content-Type"].startswith("image/")
            assert len(resp.content) == row["OriginalSize"] == int(resp.headers["Content-Length"])
            assert md5_b64(resp.content) == row["OriginalMD5"]
            assert universe.expected(info.image_id) == Outcome.ok


def test_originals_come_in_every_awkward_format(mirror: MirrorHandle) -> None:
    universe = mirror.universe
    expected_mode = {
        ImageKind.jpeg: ("JPEG", "RGB"),
        ImageKind.jpeg_cmyk: ("JPEG", "CMYK"),
        ImageKind.png_rgb: ("PNG", "RGB"),
        ImageKind.png_palette: ("PNG", "P"),
        ImageKind.png_rgba: ("PNG", "RGBA"),
        ImageKind.gif: ("GIF", "P"),
        ImageKind.png_i16: ("PNG", "I;16"),
    }
    for kind, (fmt, mode) in expected_mode.items():
        info = next(i for i in universe.images if i.kind is kind and i.misbehaviour is Misbehaviour.none)
        img = Image.open(io.BytesIO(_get(mirror.base_url + info.original_path).content))
        assert (img.format, img.mode) == (fmt, mode), kind
        assert img.size == info.stored_size
        if kind is ImageKind.png_i16:
            assert img.getextrema()[1] > 255, "really 16-bit, not 8-bit values in a 16-bit container"
        if kind is ImageKind.png_rgba:
            assert img.getchannel("A").getextrema()[0] < 255, "alpha must really be used"


def test_pictures_look_like_photos_not_flat_colours(mirror: MirrorHandle) -> None:
    # Plain JPEGs only: Pillow's convert("RGB") clips 16-bit greyscale to white (a trap for the fetcher).
    for info in mirror.universe.images[:20]:
        if info.misbehaviour is not Misbehaviour.none or info.kind is not ImageKind.jpeg:
            continue
        pixels = np.asarray(Image.open(io.BytesIO(mirror.universe.original(info.image_id))).convert("RGB"), float)
        assert pixels.std() > 20
        # Texture, not just a gradient: neighbouring pixels differ.
        assert np.abs(np.diff(pixels, axis=1)).mean() > 2


def test_applying_rotation_counter_clockwise_makes_pictures_upright(mirror: MirrorHandle) -> None:
    rotated = [i for i in mirror.universe.images if i.rotation in (90.0, 180.0, 270.0)]
    assert {i.rotation for i in rotated} == {90.0, 180.0, 270.0}
    for info in rotated:
        img = Image.open(io.BytesIO(mirror.universe.original(info.image_id))).convert("RGB")
        upright = img.rotate(info.rotation, expand=True)
        assert upright.size == (info.width, info.height)
        r, g, b = upright.getpixel((1, 1))
        assert r > 200 and g < 60 and b < 60, "the red marker is top-left once upright"


def test_removed_photos_redirect_to_a_placeholder_served_with_200(mirror: MirrorHandle) -> None:
    for image_id in mirror.universe.ids_with(Misbehaviour.placeholder):
        row = _row(mirror, image_id)
        first = _get(row["OriginalURL"], allow_redirects=False)
        assert first.status_code == 302
        assert "/photo_unavailable" in first.headers["Location"]
        final = _get(row["OriginalURL"])
        assert final.status_code == 200 and final.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(final.content)).format == "PNG"
        assert md5_b64(final.content) != row["OriginalMD5"]
        assert mirror.universe.expected(image_id) == Outcome.placeholder


@pytest.mark.parametrize(
    ("misbehaviour", "status", "outcome"),
    [
        (Misbehaviour.forbidden, 403, Outcome.http_403),
        (Misbehaviour.not_found, 404, Outcome.http_404),
        (Misbehaviour.gone, 410, Outcome.http_410),
        (Misbehaviour.server_error, 500, Outcome.http_5xx),
    ],
)
def test_dead_private_and_broken_photos_answer_their_status_every_time(
    mirror: MirrorHandle, misbehaviour: Misbehaviour, status: int, outcome: str
) -> None:
    for image_id in mirror.universe.ids_with(misbehaviour):
        for _ in range(3):
            assert _get(_row(mirror, image_id)["OriginalURL"]).status_code == status
        assert mirror.universe.expected(image_id) == outcome


def test_gone_photos_thumbnails_are_gone_too_and_others_serve_a_300k_pixel_jpeg(mirror: MirrorHandle) -> None:
    universe = mirror.universe
    gone = next(i for i in universe.images if i.misbehaviour is Misbehaviour.not_found and i.thumbnail_path)
    assert _get(mirror.base_url + gone.thumbnail_path).status_code == 404
    fine = next(i for i in universe.images if i.misbehaviour is Misbehaviour.none and i.thumbnail_path)
    img = Image.open(io.BytesIO(_get(mirror.base_url + fine.thumbnail_path).content))
    assert img.format == "JPEG" and max(img.size) <= SPEC.thumbnail_max_side


@pytest.mark.parametrize(
    ("misbehaviour", "status"), [(Misbehaviour.rate_limited, 429), (Misbehaviour.unavailable, 503)]
)
def test_transient_failures_answer_with_retry_after_then_succeed(misbehaviour: Misbehaviour, status: int) -> None:
    # A fresh server: request counters belong to one server instance.
    with start_mirror(SPEC) as mirror:
        image_id = mirror.universe.ids_with(misbehaviour)[0]
        row = _row(mirror, image_id)
        for _ in range(SPEC.transient_failures):
            resp = _get(row["OriginalURL"])
            assert resp.status_code == status
            assert resp.headers["Retry-After"] == str(SPEC.retry_after)
        resp = _get(row["OriginalURL"])
        assert resp.status_code == 200 and md5_b64(resp.content) == row["OriginalMD5"]
        assert mirror.universe.expected(image_id) == Outcome.ok
        with start_mirror(SPEC) as other:
            assert _get(_row(other, image_id)["OriginalURL"]).status_code == status


def test_truncated_rows_promise_more_bytes_than_they_send(mirror: MirrorHandle) -> None:
    image_id = mirror.universe.ids_with(Misbehaviour.truncated)[0]
    row = _row(mirror, image_id)

    async def fetch() -> tuple[int, int, bytes]:
        async with aiohttp.ClientSession() as session, session.get(row["OriginalURL"]) as resp:
            got = bytearray()
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in resp.content.iter_any():
                    got += chunk
            return resp.status, int(resp.headers["Content-Length"]), bytes(got)

    status, declared, got = asyncio.run(fetch())
    assert status == 200 and declared == row["OriginalSize"]
    assert 0 < len(got) < declared
    assert mirror.universe.expected(image_id) == Outcome.truncated


def test_slow_rows_miss_a_short_total_deadline_while_slow_ok_rows_make_it(mirror: MirrorHandle) -> None:
    universe = mirror.universe
    slow = _row(mirror, universe.ids_with(Misbehaviour.slow_timeout)[0])
    slow_ok = _row(mirror, universe.ids_with(Misbehaviour.slow_ok)[0])

    async def fetch(url: str, deadline: float) -> bytes:
        timeout = aiohttp.ClientTimeout(total=deadline)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            return await resp.read()

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(fetch(slow["OriginalURL"], SPEC.trickle_seconds / 3))
    assert md5_b64(asyncio.run(fetch(slow_ok["OriginalURL"], 30))) == slow_ok["OriginalMD5"]
    assert universe.expected(slow["ImageID"]) == Outcome.timeout
    assert universe.expected(slow_ok["ImageID"]) == Outcome.ok


def test_wrong_content_type_serves_html_whose_md5_matches_the_csv(mirror: MirrorHandle) -> None:
    image_id = mirror.universe.ids_with(Misbehaviour.wrong_content_type)[0]
    row = _row(mirror, image_id)
    resp = _get(row["OriginalURL"])
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert row["OriginalURL"].endswith(".jpg")
    assert md5_b64(resp.content) == row["OriginalMD5"] and len(resp.content) == row["OriginalSize"]
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(io.BytesIO(resp.content))
    assert mirror.universe.expected(image_id) == Outcome.not_image


def test_md5_mismatch_rows_serve_a_good_image_with_another_md5(mirror: MirrorHandle) -> None:
    image_id = mirror.universe.ids_with(Misbehaviour.md5_mismatch)[0]
    row = _row(mirror, image_id)
    resp = _get(row["OriginalURL"])
    assert resp.status_code == 200 and len(resp.content) == row["OriginalSize"]
    assert md5_b64(resp.content) != row["OriginalMD5"]
    Image.open(io.BytesIO(resp.content)).load()
    assert mirror.universe.expected(image_id) == Outcome.md5_mismatch


def test_decompression_bomb_is_a_small_png_that_pillow_refuses(mirror: MirrorHandle) -> None:
    image_id = mirror.universe.ids_with(Misbehaviour.decompression_bomb)[0]
    row = _row(mirror, image_id)
    resp = _get(row["OriginalURL"])
    assert resp.status_code == 200 and len(resp.content) < 1_000_000
    assert md5_b64(resp.content) == row["OriginalMD5"]
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(resp.content))
    assert mirror.universe.expected(image_id) == Outcome.decompression_bomb


def test_every_misbehaviour_is_present_only_among_url_set_rows(mirror: MirrorHandle) -> None:
    universe = mirror.universe
    bad = [i for i in universe.images if i.misbehaviour is not Misbehaviour.none]
    assert {i.misbehaviour for i in bad} == set(Misbehaviour) - {Misbehaviour.none}
    assert {i.role for i in bad} == {"url"}
    assert len(bad) == round(SPEC.misbehaviour_fraction * len(universe.url_set_ids()))
    assert set(universe.url_set_ids()) | set(universe.boxable_ids()) == {
        i.image_id for i in universe.images if i.subset == "train"
    }


def test_range_requests_resume_csv_archive_and_original_downloads(mirror: MirrorHandle) -> None:
    info = next(i for i in mirror.universe.images if i.misbehaviour is Misbehaviour.none)
    urls = [
        mirror.metadata_base_url + "image_ids_and_rotation.csv",
        mirror.archives_base_url + "validation.tar.gz",
        mirror.base_url + info.original_path,
    ]
    for url in urls:
        whole = _get(url)
        size, etag = len(whole.content), whole.headers["ETag"]
        assert whole.headers["Accept-Ranges"] == "bytes" and int(whole.headers["Content-Length"]) == size
        head = requests.head(url, timeout=30)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == size and head.headers["ETag"] == etag

        part = _get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == whole.content[10:20]
        assert part.headers["Content-Range"] == f"bytes 10-19/{size}"
        tail = _get(url, headers={"Range": "bytes=100-"})
        assert tail.status_code == 206 and tail.content == whole.content[100:]
        suffix = _get(url, headers={"Range": "bytes=-7"})
        assert suffix.content == whole.content[-7:]
        beyond = _get(url, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"
        stale = _get(url, headers={"Range": "bytes=10-", "If-Range": '"another-version"'})
        assert stale.status_code == 200 and stale.content == whole.content
        assert _get(url).headers["ETag"] == etag


def test_archives_hold_shrunk_jpegs_in_the_cvdf_layout(mirror: MirrorHandle) -> None:
    universe = mirror.universe
    names = universe.archive_names()
    digits = sorted({i[0] for i in universe.boxable_ids()})
    assert names == [f"train_{d}.tar.gz" for d in digits] + ["validation.tar.gz"]
    seen: set[str] = set()
    for name in names:
        data = _get(mirror.archives_base_url + name).content
        assert data == universe.archive_bytes(name)
        stem = name.removesuffix(".tar.gz")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            assert [m.name for m in members] == universe.archive_members(name)
            for member in members:
                folder, file = member.name.split("/")
                image_id = file.removesuffix(".jpg")
                assert folder == stem and file.endswith(".jpg")
                if stem != "validation":
                    assert image_id.startswith(stem[-1])
                img = Image.open(io.BytesIO(tar.extractfile(member).read()))  # type: ignore[union-attr]
                assert img.format == "JPEG" and img.mode == "RGB" and max(img.size) <= SPEC.archive_max_side
                seen.add(image_id)
    assert seen == set(universe.boxable_ids()) | set(universe.validation_ids())
    assert _get(mirror.archives_base_url + "train_g.tar.gz").status_code == 404


def test_single_cvdf_images_exist_only_for_their_subset(mirror: MirrorHandle) -> None:
    universe = mirror.universe
    target = universe.boxable_ids()[0]
    resp = _get(f"{mirror.base_url}/train/{target}.jpg")
    assert resp.status_code == 200 and resp.content == universe.small_image(target)
    assert _get(f"{mirror.base_url}/validation/{universe.validation_ids()[0]}.jpg").status_code == 200
    assert _get(f"{mirror.base_url}/train/{universe.url_set_ids()[0]}.jpg").status_code == 404
    assert _get(f"{mirror.base_url}/train/../../etc/passwd").status_code == 404
    assert _get(f"{mirror.base_url}/nothing/here").status_code == 404


def test_same_seed_gives_the_same_bytes_and_another_seed_other_bytes(tmp_path) -> None:
    spec = UniverseSpec(seed=3, n_images=24, megapixels=(0.02, 0.05), archive_max_side=64)
    a, b = Universe(spec, tmp_path / "a"), Universe(spec, tmp_path / "b")
    other = Universe(UniverseSpec(seed=4, n_images=24, megapixels=(0.02, 0.05)), tmp_path / "c")
    base = "http://127.0.0.1:1"
    assert a.full_csv(base) == b.full_csv(base) and a.boxable_csv(base) == b.boxable_csv(base)
    assert all(a.original(i) == b.original(i) for i in a.image_ids)
    assert all(a.archive_bytes(n) == b.archive_bytes(n) for n in a.archive_names())
    assert other.full_csv(base) != a.full_csv(base)
    assert not set(other.image_ids) & set(a.image_ids)
    first = a.images[0]
    assert other.original(other.image_ids[0]) != a.original(first.image_id)
    assert (
        hashlib.sha256(a.full_csv(base)).digest()
        == hashlib.sha256(Universe(spec, tmp_path / "d").full_csv(base)).digest()
    )


def test_spec_rejects_nonsense_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="megapixels"):
        UniverseSpec(megapixels=(3.0, 1.0))
    with pytest.raises(ValueError, match="unknown misbehaviours"):
        UniverseSpec(misbehaviours=("teapot",))
    with pytest.raises(ValueError, match="fraction"):
        UniverseSpec(boxable_fraction=1.5)
    assert UniverseSpec.from_json(SPEC.to_json()) == SPEC


def test_mirror_process_serves_the_same_universe_from_another_process(tmp_path) -> None:
    spec = UniverseSpec(seed=11, n_images=40, megapixels=(0.02, 0.05), archive_max_side=64)
    with MirrorProcess(spec, cache_dir=tmp_path) as mirror:
        assert mirror.pid is not None and mirror.base_url.startswith("http://127.0.0.1:")
        resp = _get(mirror.metadata_base_url + "image_ids_and_rotation.csv")
        assert resp.content == mirror.universe.full_csv(mirror.base_url)
        name = mirror.universe.archive_names()[0]
        assert _get(mirror.archives_base_url + name).content == mirror.universe.archive_bytes(name)
    with pytest.raises(requests.ConnectionError):
        requests.get(mirror.base_url, timeout=5)


def test_rotation_nan_rows_have_an_empty_field(mirror: MirrorHandle) -> None:
    nan_rows = [i for i in mirror.universe.images if math.isnan(i.rotation)]
    assert nan_rows
    _, rows = _parse(mirror.universe.full_csv(mirror.base_url))
    by_id = {r["ImageID"]: r for r in rows}
    assert all(by_id[i.image_id]["Rotation"] == "" for i in nan_rows)


def test_archive_damage_options_leave_out_images_add_hostile_members_and_corrupt_streams(tmp_path) -> None:
    spec = UniverseSpec(
        seed=5,
        n_images=60,
        megapixels=(0.02, 0.05),
        archive_max_side=64,
        archive_missing_fraction=0.1,
        hostile_archive_members=True,
        corrupt_archives=("validation",),
    )
    universe = Universe(spec, tmp_path)
    in_archives = universe.boxable_ids() + universe.validation_ids()
    missing = [i for i in in_archives if universe.expected_archive(i) == Outcome.missing_from_archive]
    assert len(missing) == round(0.1 * len(in_archives))
    first = universe.archive_names()[0]
    hostile = universe.hostile_archive_members()
    assert list(hostile) == [first]
    with tarfile.open(fileobj=io.BytesIO(universe.archive_bytes(first)), mode="r:gz") as tar:
        names = tar.getnames()
    assert set(hostile[first]) <= set(names)
    assert any(n.startswith("../") for n in names) and any(n.startswith("/") for n in names)
    for name in universe.archive_names():
        if name == "validation.tar.gz":
            continue
        members = set(universe.archive_members(name))
        for image_id in missing:
            assert f"{name.removesuffix('.tar.gz')}/{image_id}.jpg" not in members
    assert universe.corrupt_offset("train_0.tar.gz") is None
    offset = universe.corrupt_offset("validation.tar.gz")
    damaged = universe.archive_bytes("validation.tar.gz")
    assert offset is not None and 0 < offset < len(damaged)
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    inflater.decompress(damaged[:offset])  # intact up to the offset...
    with pytest.raises(zlib.error, match="invalid block type"):
        inflater.decompress(damaged[offset:])  # ...and invalid right there

    def read_all(data: bytes) -> None:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if member.isfile():
                    tar.extractfile(member).read()  # type: ignore[union-attr]

    with pytest.raises((OSError, EOFError, tarfile.TarError, zlib.error)):
        read_all(universe.archive_bytes("validation.tar.gz"))
    with pytest.raises(ValueError, match="corrupt_archives"):
        UniverseSpec(corrupt_archives=("train_z",))


def test_latency_and_bandwidth_cap_still_deliver_exact_bytes_and_ranges() -> None:
    spec = UniverseSpec(
        seed=SPEC.seed,
        n_images=SPEC.n_images,
        megapixels=SPEC.megapixels,
        archive_max_side=SPEC.archive_max_side,
        trickle_seconds=SPEC.trickle_seconds,
        latency_seconds=0.01,
        bytes_per_second=20_000_000,
    )
    assert spec.cache_key() == SPEC.cache_key(), "serving options do not change the bytes"
    with start_mirror(spec) as mirror:
        info = next(i for i in mirror.universe.images if i.misbehaviour is Misbehaviour.none)
        row = _row(mirror, info.image_id)
        resp = _get(row["OriginalURL"])
        assert resp.status_code == 200 and md5_b64(resp.content) == row["OriginalMD5"]
        part = _get(row["OriginalURL"], headers={"Range": "bytes=5-"})
        assert part.status_code == 206 and part.content == resp.content[5:]
