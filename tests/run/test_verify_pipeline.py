"""End to end on real pipeline output: mirror -> metadata -> plan -> archives + fetch (webdataset) -> read,
verify, damage, requeue, `fetch --retry-failed verify_failed`, verify clean, report."""
# A truncated webdataset tar is found and requeued here too; re-fetching into it is the fetch stage's
# business (its finalize must treat an unreadable old archive as empty) and is not exercised here.

from __future__ import annotations

import dataclasses
from pathlib import Path

from oiv4 import open as oiv4_open
from oiv4.cli.demo import DemoSettings, demo_build_settings
from oiv4.contracts.layout import LAYOUT
from oiv4.io.containers import index_zip
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.report import build_report
from oiv4.run.build import run_build
from oiv4.run.fetch import fetch_set
from oiv4.stages.verify import VerifySettings, verify
from oiv4_mirror import UniverseSpec, start_mirror

SPEC = UniverseSpec(seed=31, n_images=160, megapixels=(0.05, 0.2), trickle_seconds=4.0)


def test_pipeline_output_reads_verifies_and_recovers_from_damage(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = Storage(str(root))
    with start_mirror(SPEC, cache_dir=tmp_path / "cache") as mirror:
        base = demo_build_settings(DemoSettings(train_size=30, workers=2), mirror.base_url)
        settings = dataclasses.replace(
            base, fetch=dataclasses.replace(base.fetch, layout="webdataset"), verify=False, report=False
        )
        run_build(storage, settings)

        ds = oiv4_open(root)
        assert list(ds.sets) == ["targets", "validation", "train", "extended_targets"]
        for name, s in ds.sets.items():
            ledger = read_set(storage, name).to_pylist()
            ok = [r for r in ledger if r["outcome"] == "ok"]
            assert s.ids() == [r["image_id"] for r in ok], name  # plan order, only ok rows
            assert len(s) > 0, name
            for r in ok[:5]:
                assert len(s.read_bytes(r["image_id"])) == r["stored_bytes"]
                assert s[r["image_id"]].size == (r["stored_width"], r["stored_height"]) or r["stored_width"] is None
        assert ds["train"].layout == "tar"
        assert ds["targets"].layout == "zip"
        assert verify(storage, VerifySettings(deep=True)).ok

        # Damage: a webdataset member overwritten with garbage, a truncated tar elsewhere, a flipped byte in
        # a CVDF zip member.
        train, ext, targets = ds["train"], ds["extended_targets"], ds["targets"]
        victim = train.ids()[1]
        tar_rel = train.location(victim).container
        raw = bytearray((root / tar_rel).read_bytes())
        data = train.read_bytes(victim)
        at = raw.find(data)
        raw[at + 100 : at + len(data)] = bytes(len(data) - 100)
        (root / tar_rel).write_bytes(bytes(raw))
        ext_tar = ext.location(ext.ids()[-1]).container
        (root / ext_tar).write_bytes((root / ext_tar).read_bytes()[:700])
        t_id = targets.ids()[0]
        zloc = targets.location(t_id)
        zraw = bytearray((root / zloc.container).read_bytes())
        member = index_zip(lambda o, n: bytes(zraw[o : o + n]), len(zraw), zloc.container)[zloc.path]
        zraw[member.offset + 30 + len(zloc.path) + member.size // 2] ^= 0xFF
        (root / zloc.container).write_bytes(bytes(zraw))

        report = verify(storage, VerifySettings(deep=True, requeue=True))
        assert not report.ok
        broken = {(p.image_set, p.image_id): p.kind for p in report.problems if p.broken and p.image_id}
        assert broken[("train", victim)] == "undecodable"
        assert broken[("targets", t_id)] == "damaged"
        ext_broken = {i for (s, i), k in broken.items() if s == "extended_targets"}
        assert ext_broken and all(k == "bad_archive" for (s, _), k in broken.items() if s == "extended_targets")
        assert {s.image_set: s.requeued for s in report.sets}["train"] == 1

        # The fetch stage redoes exactly what verify requeued, repacking the shard's archive.
        retry = dataclasses.replace(settings.fetch, retry_failed=("verify_failed",))
        fetch_set(storage, "train", retry, settings.executor)

    after = verify(storage, VerifySettings(deep=True, sets=("train",)))
    assert after.ok, [p for p in after.problems if p.broken]
    reopened = oiv4_open(root)
    assert victim in reopened["train"]
    reopened["train"][victim].load()
    assert not any(i in reopened["extended_targets"] for i in ext_broken)  # no longer claimed as stored
    targets_rows = {r["image_id"]: r for r in read_set(storage, "targets").to_pylist()}
    assert targets_rows[t_id]["outcome"] == "verify_failed"
    assert "CRC" in targets_rows[t_id]["reason"]
    assert t_id not in reopened["targets"]

    page = Path(build_report(storage))
    assert page == root / LAYOUT.report_dir() / "index.html"
    assert "verify_failed" in page.read_text()  # the damaged CVDF image stays requeued and is reported
