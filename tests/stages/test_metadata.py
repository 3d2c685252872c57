from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from oiv4.contracts.errors import DownloadError, MetadataError
from oiv4.contracts.layout import BOXABLE_CSV, FULL_CSV
from oiv4.contracts.schema import COLUMNS
from oiv4.contracts.transfer import TransferSettings
from oiv4.io.ranged import read_state
from oiv4.io.storage import Storage
from oiv4.stages.metadata import MetadataSettings, fetch_metadata
from oiv4_mirror import UniverseSpec, start_mirror
from support.servers import tiny_server

FAST = TransferSettings(allow_private_networks=True, attempts=2, backoff_s=0.01, read_timeout_s=5)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    spec = UniverseSpec(seed=11, n_images=60, megapixels=(0.05, 0.1))
    with start_mirror(spec, cache_dir=tmp_path_factory.mktemp("mirror-cache")) as handle:
        yield handle


def test_metadata_downloads_both_csvs_from_a_mirror(tmp_path: Path, mirror) -> None:
    sizes = fetch_metadata(Storage(str(tmp_path)), MetadataSettings(base_url=mirror.metadata_base_url, transfer=FAST))
    full = (tmp_path / "metadata" / FULL_CSV).read_bytes()
    assert full == mirror.universe.full_csv(mirror.base_url)
    assert sizes[FULL_CSV] == len(full)
    assert (tmp_path / "metadata" / BOXABLE_CSV).read_bytes() == mirror.universe.boxable_csv(mirror.base_url)
    assert not list((tmp_path / "metadata").glob("*.part*"))


class Interrupt(Exception):
    """Raised from the progress callback: the download stops there, as if the process had been stopped."""


def test_metadata_resumes_a_partial_download_with_range(tmp_path: Path, mirror) -> None:
    body = mirror.universe.full_csv(mirror.base_url)
    meta = tmp_path / "metadata"
    part_size = 1024
    assert len(body) > 8 * part_size
    settings = TransferSettings(
        allow_private_networks=True,
        attempts=2,
        backoff_s=0.01,
        read_timeout_s=5,
        part_size=part_size,
        connections=1,
        checkpoint_s=0,
    )
    half = len(body) // 2

    def stop_at_half(name: str, done: int, total: int | None) -> None:
        if name == FULL_CSV and done > half:
            raise Interrupt

    with pytest.raises(Interrupt):
        fetch_metadata(
            Storage(str(tmp_path)), MetadataSettings(mirror.metadata_base_url, transfer=settings), stop_at_half
        )
    state = read_state(meta / FULL_CSV)
    assert state is not None and state["done"] == list(range(half // part_size))
    # A marker byte in a part already on disk: if the download restarted instead of resuming, it would vanish.
    marker = half // part_size * part_size - 1
    with open(meta / (FULL_CSV + ".part"), "r+b") as fh:
        fh.seek(marker)
        fh.write(b"#")
    fetch_metadata(Storage(str(tmp_path)), MetadataSettings(mirror.metadata_base_url, transfer=settings))
    got = (meta / FULL_CSV).read_bytes()
    assert len(got) == len(body)
    assert (
        got[:marker] == body[:marker] and got[marker : marker + 1] == b"#" and got[marker + 1 :] == body[marker + 1 :]
    )
    assert not list(meta.glob("*.part*"))


def test_complete_files_are_not_downloaded_again(tmp_path: Path, mirror) -> None:
    storage = Storage(str(tmp_path))
    fetch_metadata(storage, MetadataSettings(base_url=mirror.metadata_base_url, transfer=FAST))
    path = tmp_path / "metadata" / FULL_CSV
    mtime = path.stat().st_mtime_ns
    fetch_metadata(storage, MetadataSettings(base_url="http://127.0.0.1:9/nothing-listens-here/", transfer=FAST))
    assert path.stat().st_mtime_ns == mtime


def _csv(header: str) -> bytes:
    return (header + "\n" + "0123456789abcdef,train" + ",x" * 10 + "\n").encode()


def test_body_shorter_than_content_length_never_looks_complete(tmp_path: Path) -> None:
    good = _csv(",".join(COLUMNS))

    async def short(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":  # the download first asks for the size: answer that honestly
            return web.Response(headers={"Content-Length": str(len(good))})
        resp = web.StreamResponse(headers={"Content-Length": str(len(good))})
        await resp.prepare(request)
        await resp.write(good[:20])
        request.transport.close()  # the connection drops mid-body
        return resp

    with tiny_server({f"/{FULL_CSV}": short, f"/train/{BOXABLE_CSV}": short}) as base, pytest.raises(DownloadError):
        fetch_metadata(Storage(str(tmp_path)), MetadataSettings(base_url=base, transfer=FAST))
    assert not (tmp_path / "metadata" / FULL_CSV).exists()
    assert (tmp_path / "metadata" / (FULL_CSV + ".part")).exists()


def test_wrong_header_is_refused_and_set_aside(tmp_path: Path) -> None:
    async def wrong(request: web.Request) -> web.Response:
        return web.Response(body=_csv("ImageID,Subset,Title"))

    with (
        tiny_server({f"/{FULL_CSV}": wrong, f"/train/{BOXABLE_CSV}": wrong}) as base,
        pytest.raises(MetadataError, match="unexpected header"),
    ):
        fetch_metadata(Storage(str(tmp_path)), MetadataSettings(base_url=base, transfer=FAST))
    assert not (tmp_path / "metadata" / FULL_CSV).exists()
    assert (tmp_path / "metadata" / (FULL_CSV + ".rejected")).exists()


def test_http_error_is_a_clear_cli_error_not_a_traceback(tmp_path: Path) -> None:
    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    with tiny_server({f"/{FULL_CSV}": missing, f"/train/{BOXABLE_CSV}": missing}) as base:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "oiv4",
                "metadata",
                "--root",
                str(tmp_path),
                "--base-url",
                base,
                "--allow-private-networks",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 4  # SourceError: the server would not serve the CSVs
    assert "HTTP 404" in proc.stderr and "Traceback" not in proc.stderr
