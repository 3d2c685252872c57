"""Issue #10: every kind of damage, in every layout and in the archive zips, is found by a default `oiv4 verify`.

Real pipeline output (mirror -> metadata -> plan -> archives + fetch) in the folder, zip and webdataset layouts
plus the targets/validation archive zips. For each kind of damage -- a zeroed 2,000-byte block mid-file, one
flipped bit, truncation, appended bytes, another ID's image swapped in -- applied to one stored image (inside a
zip or tar: the member's bytes damaged in place, or the container rewritten around a changed member so it still
parses), verify must report exactly that image as broken, with the kind that damage shows as. For the URL sets,
`verify --requeue` then `fetch --retry-failed verify_failed` must repair it.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from oiv4.cli.demo import DemoSettings, demo_build_settings
from oiv4.io.containers import BlobReader, index_zip
from oiv4.io.ledger import read_set
from oiv4.io.locations import parse_location
from oiv4.io.storage import Storage
from oiv4.run.build import BuildSettings, run_build
from oiv4.run.fetch import fetch_set
from oiv4.stages.verify import VerifySettings, verify
from oiv4_mirror import UniverseSpec, start_mirror

SPEC = UniverseSpec(seed=47, n_images=120, megapixels=(0.05, 0.2), trickle_seconds=4.0, misbehaviour_fraction=0.0)
LAYOUTS = ("folder", "zip", "webdataset")
DAMAGES = ("zeroed_block", "flipped_bit", "truncated", "appended", "swapped")
BLOCK = 2_000


def _mutate(kind: str, data: bytes, other: bytes) -> bytes:
    """The damaged version of `data` (`other`: another image's stored bytes, for `swapped`)."""
    if kind == "zeroed_block":
        mid = len(data) // 2 - BLOCK // 2
        return data[:mid] + bytes(BLOCK) + data[mid + BLOCK :]
    if kind == "flipped_bit":
        raw = bytearray(data)
        raw[len(raw) // 2] ^= 0x04
        return bytes(raw)
    if kind == "truncated":
        return data[: len(data) - 1_500]
    if kind == "appended":
        return data + b"\x00trailing garbage" * 8
    assert kind == "swapped" and other != data
    return other


def _in_place(kind: str) -> bool:
    """Damage that keeps the length: written over the member's bytes inside the container as they are."""
    return kind in ("zeroed_block", "flipped_bit")


def _damage(root: Path, location: str, kind: str, other: bytes) -> None:
    """Apply `kind` to the stored image at `location` (a file, a zip member or a webdataset sample)."""
    loc = parse_location(location)
    if loc.container is None:
        path = root / loc.path
        path.write_bytes(_mutate(kind, path.read_bytes(), other))
        return
    path = root / loc.container
    raw = bytearray(path.read_bytes())
    if loc.kind == "zip":
        member = index_zip(lambda o, n: bytes(raw[o : o + n]), len(raw), loc.container)[loc.path]
        assert member.method == 0, "stored members: damage written in place is damage to the image bytes"
        n_len = int.from_bytes(raw[member.offset + 26 : member.offset + 28], "little")
        x_len = int.from_bytes(raw[member.offset + 28 : member.offset + 30], "little")
        start = member.offset + 30 + n_len + x_len
        old = bytes(raw[start : start + member.size])
        if _in_place(kind):
            raw[start : start + member.size] = _mutate(kind, old, other)
            path.write_bytes(bytes(raw))
        else:
            path.write_bytes(_rewrite_zip(bytes(raw), loc.path, _mutate(kind, old, other)))
        return
    name = loc.path if loc.path.endswith(".jpg") else f"{loc.path}.jpg"
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tf:
        info = tf.getmember(name)
        start, size = info.offset_data, info.size
    old = bytes(raw[start : start + size])
    if _in_place(kind):
        raw[start : start + size] = _mutate(kind, old, other)
        path.write_bytes(bytes(raw))
    else:
        path.write_bytes(_rewrite_tar(bytes(raw), name, _mutate(kind, old, other)))


def _rewrite_zip(raw: bytes, name: str, data: bytes) -> bytes:
    """The zip with member `name` holding `data` (a consistent central directory and CRC: only the bytes changed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, data if info.filename == name else src.read(info))
    return out.getvalue()


def _rewrite_tar(raw: bytes, name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(raw)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for info in src.getmembers():
            body = data if info.name == name else src.extractfile(info).read()  # type: ignore[union-attr]
            info.size = len(body)
            dst.addfile(info, io.BytesIO(body))
    return out.getvalue()


def _expected_kind(layout: str, kind: str, old: bytes, other: bytes) -> str:
    if kind in ("truncated", "appended") or (kind == "swapped" and len(other) != len(old)):
        return "size_mismatch"
    if layout == "zip" and _in_place(kind):
        return "damaged"  # the member's CRC-32 no longer matches: found while reading, before hashing
    return "checksum_mismatch"


@dataclasses.dataclass
class Built:
    roots: dict[str, Path]  # layout -> root (train in that layout; the folder root also holds the archive sets)
    settings: BuildSettings


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    tmp = tmp_path_factory.mktemp("damage")
    with start_mirror(SPEC, cache_dir=tmp / "cache") as mirror:
        base = demo_build_settings(DemoSettings(train_size=16, workers=1), mirror.base_url)
        settings = dataclasses.replace(base, verify=False, report=False, hash=False, dedup=False)
        roots = {"folder": tmp / "folder"}
        run_build(Storage(str(roots["folder"])), settings)
        for layout in ("zip", "webdataset"):
            roots[layout] = tmp / layout
            for part in ("metadata", "plan"):
                shutil.copytree(roots["folder"] / part, roots[layout] / part)
            fetch = dataclasses.replace(settings.fetch, layout=layout)
            fetch_set(Storage(str(roots[layout])), "train", fetch, settings.executor)
        for layout, root in roots.items():
            sets = None if layout == "folder" else ("train",)
            clean = verify(root, VerifySettings(sets=sets))
            assert clean.ok and not clean.problems, (layout, clean.problems)
        yield Built(roots, settings)


def _victim(root: Path, image_set: str) -> tuple[str, str, bytes, bytes]:
    """(image_id, location, stored bytes, another image's stored bytes of a different size) in `image_set`."""
    ok = [r for r in read_set(Storage(str(root)), image_set).to_pylist() if r["outcome"] == "ok"]
    ok.sort(key=lambda r: -r["stored_bytes"])
    victim, other = ok[0], next(r for r in ok[1:] if r["stored_bytes"] != ok[0]["stored_bytes"])
    assert victim["stored_bytes"] > 3 * BLOCK and victim["checksum"]
    blobs = BlobReader(Storage(str(root)))
    data, other_data = (blobs.read(parse_location(r["location"])) for r in (victim, other))
    blobs.close()
    return victim["image_id"], victim["location"], data, other_data


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("cache"))
    return dest


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_verify_finds_each_damage_in_each_layout_and_fetch_repairs_it(
    built: Built, tmp_path: Path, layout: str, kind: str
) -> None:
    root = _copy(built.roots[layout], tmp_path / "root")
    image_id, location, old, other = _victim(root, "train")
    _damage(root, location, kind, other)

    report = verify(root, VerifySettings(sets=("train",), requeue=True))
    broken = {(p.image_id, p.kind) for p in report.problems if p.broken}
    assert broken == {(image_id, _expected_kind(layout, kind, old, other))}, [p.detail for p in report.problems]
    (check,) = report.sets
    assert check.broken_images == 1 and check.requeued == 1 and check.intact == check.ok_rows - 1

    retry = dataclasses.replace(built.settings.fetch, layout=layout, retry_failed=("verify_failed",))
    fetch_set(Storage(str(root)), "train", retry, built.settings.executor)
    after = verify(root, VerifySettings(sets=("train",), deep=True))
    assert after.ok, [p for p in after.problems if p.broken]
    row = next(r for r in read_set(Storage(str(root)), "train").to_pylist() if r["image_id"] == image_id)
    assert row["outcome"] == "ok"


@pytest.mark.parametrize("kind", DAMAGES)
@pytest.mark.parametrize("image_set", ("targets", "validation"))
def test_verify_finds_each_damage_in_the_archive_zips(built: Built, tmp_path: Path, image_set: str, kind: str) -> None:
    root = _copy(built.roots["folder"], tmp_path / "root")
    image_id, location, old, other = _victim(root, image_set)
    assert parse_location(location).kind == "zip"  # a member of a converted CVDF archive
    _damage(root, location, kind, other)

    report = verify(root, VerifySettings(sets=(image_set,), requeue=True))
    broken = {(p.image_id, p.kind) for p in report.problems if p.broken}
    assert broken == {(image_id, _expected_kind("zip", kind, old, other))}, [p.detail for p in report.problems]
    row = next(r for r in read_set(Storage(str(root)), image_set).to_pylist() if r["image_id"] == image_id)
    assert row["outcome"] == "verify_failed" and row["reason"].startswith("verify: ")


def test_fast_verify_misses_same_size_damage_that_the_default_finds(built: Built, tmp_path: Path) -> None:
    """Why the default reads every byte: a zeroed block keeps the size, so a size-only check passes it."""
    root = _copy(built.roots["folder"], tmp_path / "root")
    image_id, location, _, other = _victim(root, "train")
    _damage(root, location, "zeroed_block", other)
    assert verify(root, VerifySettings(sets=("train",), fast=True)).ok
    assert {p.image_id for p in verify(root, VerifySettings(sets=("train",))).problems if p.broken} == {image_id}
