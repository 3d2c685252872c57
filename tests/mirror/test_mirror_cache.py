"""The mirror's on-disk cache: where it goes (`$OIV4_MIRROR_CACHE`, else the temp directory) and `make clean`."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from oiv4_mirror.cache import CACHE_ENV, default_cache_dir
from oiv4_mirror.universe import Universe, UniverseSpec
from support.paths import REPO


def test_the_cache_goes_under_oiv4_mirror_cache_when_set_else_the_temp_directory(tmp_path, monkeypatch):
    spec = UniverseSpec(seed=3, n_images=4)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert default_cache_dir(spec) == Path(tempfile.gettempdir()) / f"oiv4-mirror-{spec.cache_key()}"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "caches"))
    universe = Universe(spec)
    assert universe.cache_dir == tmp_path / "caches" / f"oiv4-mirror-{spec.cache_key()}"
    path = universe.original_path(universe.images[0].image_id)  # rendered and cached there
    assert path.is_relative_to(tmp_path / "caches") and path.stat().st_size > 0


def test_make_clean_removes_the_mirror_caches_and_nothing_else_there(tmp_path):
    caches = tmp_path / "caches"
    for name in ("oiv4-mirror-0123456789abcdef", "oiv4-mirror-fedcba9876543210"):
        (caches / name / "originals").mkdir(parents=True)
        (caches / name / "originals" / "x.jpg").write_bytes(b"x")
    (caches / "someone-else").mkdir()
    work = tmp_path / "clone"
    (work / "demo-data").mkdir(parents=True)
    env = {**os.environ, CACHE_ENV: str(caches)}
    subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "-C", str(work), "clean"], env=env, check=True)
    assert sorted(p.name for p in caches.iterdir()) == ["someone-else"]
    assert not (work / "demo-data").exists()
