"""Kills: a process SIGKILLed mid-download or mid-conversion, then a re-run that finishes the job.

The child process kills itself with SIGKILL from the public progress callback once a given number of
bytes of a given stage has gone by: the kill lands at a known point without any timing guesswork.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.ledger import read_set
from oiv4.io.storage import Storage
from oiv4.run.archives import build_archive_set
from oiv4.stages.archives import ArchiveSettings, archive_done
from support.archives import Entry, RangeServer, image_ids, images_archive, make_archive, noisy_jpeg, write_plan

CHILD = r"""
import json, os, signal, sys
from oiv4.run.archives import build_archive_set
from oiv4.stages.archives import ArchiveProgress, ArchiveSettings
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.storage import Storage

cfg = json.loads(sys.argv[1])

class KillAt(ArchiveProgress):
    def __init__(self):
        self.seen = 0

    def advance(self, stage, name, n):
        if stage == cfg["stage"] and name == cfg["archive"]:
            self.seen += n
            if self.seen >= cfg["after"]:
                os.kill(os.getpid(), signal.SIGKILL)

s = cfg["settings"]
settings = ArchiveSettings(**{**s, "transfer": TransferSettings(**s["transfer"])})
build_archive_set(Storage(cfg["root"]), cfg["set"], settings, KillAt())
sys.exit(3)  # reaching this means the kill point was never hit
"""


def _archive_settings(settings: dict) -> ArchiveSettings:
    """The settings a JSON-able dict stands for (the child process gets them on its command line)."""
    return ArchiveSettings(**{**settings, "transfer": TransferSettings(**settings["transfer"])})


def run_until_killed(root: Path, image_set: str, settings: dict, stage: str, archive: str, after: int) -> None:
    cfg = {
        "root": str(root),
        "set": image_set,
        "settings": settings,
        "stage": stage,
        "archive": archive,
        "after": after,
    }
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_kill_mid_download_resumes_and_fetches_only_the_missing_parts(tmp_path: Path) -> None:
    ids = image_ids(4, seed=20)
    archive = images_archive("validation", ids, noisy=True)
    part = 8192
    assert len(archive.data) > 14 * part
    root = tmp_path / "root"
    storage = Storage(str(root))
    write_plan(storage, "validation", ids)
    with RangeServer({archive.name: archive.data}) as server:
        settings = {
            "source": server.base_url,
            "transfer": {"allow_private_networks": True, "part_size": part, "connections": 1, "checkpoint_s": 0},
        }
        # Killed after the 11th part's bytes were written but before it was recorded as done.
        run_until_killed(root, "validation", settings, "download", archive.name, after=10 * part + 1)
        tar = root / LAYOUT.archive_tar("validation", "validation")
        partial = tar.with_name(tar.name + ".part")
        sidecar = json.loads(tar.with_name(tar.name + ".part.json").read_text())
        assert partial.exists() and not tar.exists()
        assert sidecar["done"] == list(range(10))

        served_before = server.bytes_served
        summary = build_archive_set(storage, "validation", _archive_settings(settings))
        fetched_again = server.bytes_served - served_before

    report = summary.archives[0]
    assert report.status == "converted", report.error
    assert fetched_again == len(archive.data) - 10 * part == report.bytes_downloaded
    assert report.parts_resumed == 10
    with zipfile.ZipFile(root / LAYOUT.archive_zip("validation", "validation")) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == {e.name: e.data for e in archive.entries}
    assert not partial.exists() and not tar.exists() and not tar.with_name(tar.name + ".part.json").exists()


def test_resume_after_the_remote_changed_starts_over_and_says_so(tmp_path: Path) -> None:
    ids = image_ids(3, seed=21)
    old = images_archive("validation", ids, noisy=True)
    new = images_archive("validation", ids, seed=99, noisy=True)
    root = tmp_path / "root"
    storage = Storage(str(root))
    write_plan(storage, "validation", ids)
    settings = {"transfer": {"allow_private_networks": True, "part_size": 8192, "connections": 1, "checkpoint_s": 0}}
    with RangeServer({old.name: old.data}) as server:
        run_until_killed(
            root, "validation", {**settings, "source": server.base_url}, "download", old.name, 3 * 8192 + 1
        )
    with RangeServer({new.name: new.data}) as server:
        summary = build_archive_set(storage, "validation", _archive_settings({**settings, "source": server.base_url}))
        assert server.bytes_served == len(new.data)
    report = summary.archives[0]
    assert report.status == "converted" and report.parts_resumed == 0
    assert any("changed since the interrupted download: starting over" in n for n in report.notes)
    with zipfile.ZipFile(root / LAYOUT.archive_zip("validation", "validation")) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == {e.name: e.data for e in new.entries}


def test_kill_mid_conversion_redoes_only_that_archive_without_downloading_again(tmp_path: Path) -> None:
    ids3, ids7 = image_ids(2, "3", seed=22), image_ids(18, "7", seed=23)
    a3 = images_archive("train_3", ids3)
    photo = noisy_jpeg(1, (512, 512))  # ~0.3 MB that gzip cannot shrink: train_7 spans two 4 MiB read pieces
    a7 = make_archive("train_7", [Entry(f"train_7/{i}.jpg", photo + bytes([k])) for k, i in enumerate(ids7)])
    assert len(a7.data) > 4 << 20
    root = tmp_path / "root"
    storage = Storage(str(root))
    write_plan(storage, "targets", ids3 + ids7)
    with RangeServer({a3.name: a3.data, a7.name: a7.data}) as server:
        settings = {
            "source": server.base_url,
            "transfer": {"allow_private_networks": True, "part_size": 1 << 20, "connections": 2},
        }
        # The second 4 MiB piece of train_7 reaches the converter: the first one's members are in the temp zip.
        run_until_killed(root, "targets", settings, "convert", a7.name, after=(4 << 20) + 1)
        images = root / "targets" / "images"
        assert archive_done(storage, "targets", "train_3")
        assert not (images / "train_7.zip").exists()
        assert (images / "train_7.tar.gz").read_bytes() == a7.data  # downloaded before the kill
        litter = [p.name for p in images.iterdir() if ".oiv4tmp-" in p.name]
        assert len(litter) == 1 and litter[0].startswith("train_7.zip") and (images / litter[0]).stat().st_size > 0

        served = server.bytes_served
        summary = build_archive_set(storage, "targets", _archive_settings(settings))
        assert server.bytes_served == served  # nothing downloaded again

    status = {a.name: a.status for a in summary.archives}
    assert status == {"train_3.tar.gz": "done_before", "train_7.tar.gz": "converted"}
    assert sorted(p.name for p in images.iterdir()) == ["train_3.zip", "train_7.zip"]  # litter and tar.gz gone
    with zipfile.ZipFile(images / "train_7.zip") as zf:
        assert len(zf.namelist()) == 18 and zf.testzip() is None
    ledger = read_set(storage, "targets")
    assert sorted(ledger["row"].to_pylist()) == list(range(20))
    assert set(ledger["outcome"].to_pylist()) == {"ok"}


def test_ctrl_c_stops_the_cli_promptly_and_a_rerun_finishes(tmp_path: Path) -> None:
    ids = image_ids(10, seed=24)
    archive = make_archive(
        "validation", [Entry(f"validation/{i}.jpg", noisy_jpeg(k, (512, 512))) for k, i in enumerate(ids)]
    )
    assert len(archive.data) > 2 << 20  # three 1 MiB parts at least
    root = tmp_path / "root"
    storage = Storage(str(root))
    write_plan(storage, "validation", ids)
    oiv4 = Path(sys.executable).with_name("oiv4")
    cmd = [
        str(oiv4),
        "archives",
        "validation",
        "--root",
        str(root),
        "--part-size-mb",
        "1",
        "--connections",
        "1",
        "--allow-private-networks",
    ]
    with RangeServer({archive.name: archive.data}, stall_after_requests=2) as server:
        proc = subprocess.Popen(
            [*cmd, "--source", server.base_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        while server.gets <= 2 and proc.poll() is None:  # the third part's request is now hanging in the server
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        # Hang guard only: a CLI that waited for the stalled transfer would sit here until the server let go (60 s).
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted." in err and "Run the same command again" in err
    assert not (root / LAYOUT.archive_zip("validation", "validation")).exists()

    with RangeServer({archive.name: archive.data}) as server:
        again = subprocess.run([*cmd, "--source", server.base_url], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert set(read_set(storage, "validation")["outcome"].to_pylist()) == {"ok"}
