"""The settings that shape stored bytes are recorded with each shard; a resume with other values is refused
with the differing settings named, unless forced, and then the override is recorded."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from oiv4.contracts.errors import SettingsChangedError
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.run.archives import build_archive_set
from oiv4.run.fetch import fetch_set
from oiv4.run.shard_settings import read_record, settings_rel
from oiv4.stages.archives import ArchiveSettings
from oiv4.stages.fetch import TransformSettings
from support.archives import Entry, image_ids, jpeg, make_archive, write_plan
from support.fetch_env import EXECUTOR, SETTINGS, copy_root, planned_root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with planned_root(tmp_path_factory.mktemp("plan")) as (mirror, template):
        yield mirror, template


def test_fetch_resumed_with_another_quality_is_refused_then_forced_and_recorded(env, tmp_path: Path) -> None:
    _, template = env
    storage = copy_root(template, tmp_path / "root")
    first = fetch_set(storage, "train", SETTINGS, EXECUTOR, shards=[0])
    failed = {o for o in first.totals if o != "ok"}
    assert failed, "the mirror's misbehaviours leave failures for the retry to resume"
    record = read_record(storage, "train", 0)
    assert record is not None and record["settings"]["quality"] == 90 and record["overrides"] == []
    assert read_record(storage, "train", 1) is None  # never started

    other = replace(SETTINGS, transform=TransformSettings(quality=80, max_side=512), retry_failed=("all",))
    before = read_set(storage, "train")
    with pytest.raises(SettingsChangedError) as refused:
        fetch_set(storage, "train", other, EXECUTOR, shards=[0])
    message = str(refused.value)
    assert "train shard 0 was started with other settings" in message
    assert "max_side: was 1024, now 512" in message and "quality: was 90, now 80" in message
    assert "--force-settings" in message
    assert read_set(storage, "train").equals(before)  # nothing ran
    assert read_record(storage, "train", 0) == record

    forced = fetch_set(storage, "train", replace(other, force_settings=True), EXECUTOR, shards=[0])
    assert forced.done > 0
    now = read_record(storage, "train", 0)
    assert now is not None and now["settings"]["quality"] == 80 and now["settings"]["max_side"] == 512
    (override,) = now["overrides"]
    assert override["forced"] is True and override["previous"] == record["settings"]
    on_disk = json.loads((tmp_path / "root" / settings_rel("train", 0)).read_text())
    assert on_disk == now


def test_archive_resumed_with_another_member_limit_is_refused_unless_forced(tmp_path: Path) -> None:
    (image_id,) = image_ids(1, "5", seed=50)
    archive = make_archive("train_5", [Entry(f"train_5/{image_id}.jpg", jpeg(6))])
    folder = tmp_path / "src"
    folder.mkdir()
    storage = Storage(str(tmp_path / "root"))
    write_plan(storage, "targets", [image_id])
    # The source is missing at first: the archive's shard starts (and records its settings) but fails.
    settings = ArchiveSettings(source=str(folder), max_member_bytes=1 << 20)
    assert build_archive_set(storage, "targets", settings).archives[0].status == "failed"
    (folder / archive.name).write_bytes(archive.data)

    with pytest.raises(SettingsChangedError, match=r"max_member_bytes: was 1048576, now 2048"):
        build_archive_set(storage, "targets", replace(settings, max_member_bytes=2048))
    summary = build_archive_set(storage, "targets", replace(settings, max_member_bytes=2048, force_settings=True))
    assert summary.ok and summary.outcomes == {"ok": 1}
    record = read_record(storage, "targets", 5)
    assert record is not None and record["settings"]["max_member_bytes"] == 2048
    assert record["overrides"][0]["previous"]["max_member_bytes"] == 1 << 20
