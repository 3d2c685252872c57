"""The archive stage against the mirror: real metadata, the real plan, CVDF-layout archives over HTTP and S3."""

from __future__ import annotations

import zipfile
from pathlib import Path

import oiv4
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.checksum import checksum
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.run.archives import build_archive_set
from oiv4.stages.archives import ArchiveSettings
from oiv4.stages.metadata import MetadataSettings, fetch_metadata
from oiv4.stages.plan import PlanSettings, build_plan
from oiv4_mirror import UniverseSpec, start_mirror
from support.archives import upload
from support.moto import moto_s3

SPEC = UniverseSpec(
    seed=41,
    n_images=90,
    megapixels=(0.05, 0.3),
    misbehaviour_fraction=0.0,
    special_kind_fraction=0.0,
    archive_missing_fraction=0.1,
    hostile_archive_members=True,
)


def planned(storage: Storage, metadata_base_url: str) -> None:
    fetch_metadata(
        storage, MetadataSettings(base_url=metadata_base_url, transfer=TransferSettings(allow_private_networks=True))
    )
    build_plan(storage, PlanSettings(train_size=10, shard_rows=16))


def check_set(storage: Storage, universe, image_set: str) -> None:
    """Every plan row ends as the mirror says it must; every stored image is byte-identical to the mirror's."""
    ledger = read_set(storage, image_set).to_pylist()
    plan_rows = [r for r in ledger if r["row"] >= 0]
    ids = universe.boxable_ids() if image_set == "targets" else universe.validation_ids()
    assert sorted(r["image_id"] for r in plan_rows) == sorted(ids)
    for r in plan_rows:
        assert r["outcome"] == universe.expected_archive(r["image_id"]), r
        if r["outcome"] == "ok":
            container, member = r["location"].split(":", 1)
            with zipfile.ZipFile(Path(storage.root) / container) as zf:
                assert zf.read(member) == universe.small_image(r["image_id"])
            assert r["checksum"] == checksum(universe.small_image(r["image_id"]))  # of the member as stored
        else:
            assert r["checksum"] is None


def test_targets_and_validation_build_from_the_mirror_over_https(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "root"))
    with start_mirror(SPEC) as mirror:
        planned(storage, mirror.metadata_base_url)
        settings = ArchiveSettings(
            source=mirror.archives_base_url,
            transfer=TransferSettings(allow_private_networks=True, part_size=64 << 10, connections=4),
        )
        targets = build_archive_set(storage, "targets", settings)
        validation = build_archive_set(storage, "validation", settings)
        universe = mirror.universe

        assert targets.ok and validation.ok, (targets.to_dict(), validation.to_dict())
        assert sorted(a.name for a in targets.archives) == sorted(
            n for n in universe.archive_names() if n != "validation.tar.gz"
        )
        assert all("verified by size and ETag" in a.verification for a in targets.archives + validation.archives)
        check_set(storage, universe, "targets")
        check_set(storage, universe, "validation")

        # What downstream code sees: oiv4.open reads every stored image back from the zips.
        with oiv4.open(str(tmp_path / "root")) as ds:
            for name, ids in (("targets", universe.boxable_ids()), ("validation", universe.validation_ids())):
                stored = [i for i in ids if universe.expected_archive(i) == "ok"]
                assert sorted(ds[name].ids()) == sorted(stored)
                assert all(ds[name].read_bytes(i) == universe.small_image(i) for i in stored)

        # The mirror's hostile members: each refused with a reason, none in any zip, nothing outside the root.
        hostile = universe.hostile_archive_members()
        refused = [r for r in read_set(storage, "targets").to_pylist() if r["row"] < 0]
        assert len(refused) == sum(len(v) for v in hostile.values()) and hostile
        assert all(r["outcome"] == "hostile_member" for r in refused)
        assert not Path("/tmp/oiv4-mirror-absolute.jpg").exists()
        assert not list((tmp_path).glob("*escape*"))
        for zpath in (tmp_path / "root").rglob("*.zip"):
            with zipfile.ZipFile(zpath) as zf:
                assert all(n.count("/") == 1 and n.endswith(".jpg") for n in zf.namelist())


def test_targets_stream_from_s3_holding_the_mirror_archives(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "root"))
    with start_mirror(SPEC) as mirror, moto_s3() as endpoint:
        planned(storage, mirror.metadata_base_url)
        universe = mirror.universe
        from support.archives import Archive

        upload(
            endpoint,
            "open-images-dataset",
            "tar/",
            [Archive(n, universe.archive_bytes(n)) for n in universe.archive_names()],
        )
        settings = ArchiveSettings(
            s3_endpoint=endpoint,
            stream=True,
            transfer=TransferSettings(allow_private_networks=True, part_size=32 << 10, connections=4),
        )
        summary = build_archive_set(storage, "targets", settings)
        assert summary.ok, summary.to_dict()
        check_set(storage, universe, "targets")
    assert not list((tmp_path / "root").rglob("*.tar.gz"))


def test_mirror_archive_with_an_invalid_deflate_block_is_named_at_its_exact_offset(tmp_path: Path) -> None:
    spec = UniverseSpec(
        seed=42, n_images=60, megapixels=(0.05, 0.2), misbehaviour_fraction=0.0, corrupt_archives=("validation",)
    )
    storage = Storage(str(tmp_path / "root"))
    with start_mirror(spec) as mirror:
        planned(storage, mirror.metadata_base_url)
        summary = build_archive_set(
            storage,
            "validation",
            ArchiveSettings(source=mirror.archives_base_url, transfer=TransferSettings(allow_private_networks=True)),
        )
        offset = mirror.universe.corrupt_offset("validation.tar.gz")
    report = summary.archives[0]
    assert report.status == "failed"
    assert f"zlib-ng: invalid block type at compressed byte {offset:,};" in report.error
    assert f"zlib: invalid block type at compressed byte {offset:,})" in report.error
    tar = tmp_path / "root" / LAYOUT.archive_tar("validation", "validation")
    assert f"delete {tar} and re-run to download it again" in report.error and tar.exists()
    assert not (tmp_path / "root" / LAYOUT.archive_zip("validation", "validation")).exists()
