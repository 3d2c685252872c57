"""What decoding a JPEG costs is bounded before it starts: the memory budget charges what libjpeg-turbo really
holds (a progressive file keeps every coefficient of the whole image), and a file with more scans than
MAX_SCANS is refused (`too_many_scans`) instead of costing one pass over the image per scan.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oiv4.contracts.errors import CorruptImageError, OutcomeError
from oiv4.contracts.schema import Outcome
from oiv4.io.image_decode import decode
from oiv4.io.jpeg_layout import read_layout
from oiv4.io.strict_decode import MAX_SCANS, decode_charge, decode_strict, open_header
from oiv4.stages.fetch import TransformSettings
from oiv4.stages.fetch.transform import transform_image
from support.paths import SRC


def _jpeg(size: tuple[int, int], progressive: bool, seed: int = 0, subsampling: int = 2) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    pixels = (x + rng.normal(0, 25, (h, w, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=90, progressive=progressive, subsampling=subsampling)
    return buf.getvalue()


def _many_scans(data: bytes, copies: int) -> bytes:
    """A progressive JPEG whose scan sequence is repeated `copies` times (header once, EOI once)."""
    layout = read_layout(data)
    sos = data.rfind(b"\xff\xda", 0, layout.scan_start)
    scans = data[sos : layout.end - 2]
    return data[:sos] + scans * copies + b"\xff\xd9"


def test_a_jpeg_with_more_scans_than_the_limit_is_its_own_outcome_everywhere_it_is_decoded() -> None:
    crafted = _many_scans(_jpeg((64, 48), progressive=True), 40)
    assert read_layout(crafted).scans > MAX_SCANS
    with pytest.raises(OutcomeError) as err:
        decode_strict(crafted, max_pixels=10**8)
    assert err.value.outcome == Outcome.too_many_scans and f"more than {MAX_SCANS}" in err.value.reason
    with pytest.raises(OutcomeError) as fetched:
        transform_image(crafted, None, TransformSettings())
    assert fetched.value.outcome == Outcome.too_many_scans
    with pytest.raises(CorruptImageError, match="scans, more than"):
        decode(crafted)  # verify --deep and hash


def test_ordinary_progressive_and_baseline_files_are_within_the_scan_limit() -> None:
    for progressive in (False, True):
        data = _jpeg((320, 240), progressive)
        assert 1 <= read_layout(data).scans <= MAX_SCANS
        assert decode_strict(data, max_pixels=10**8).image.size == (320, 240)


def test_the_budget_charges_a_progressive_jpeg_its_coefficient_buffer() -> None:
    w, h = 320, 240
    baseline, progressive = _jpeg((w, h), False), _jpeg((w, h), True)
    assert decode_charge(baseline, open_header(baseline, 10**8)) == w * h * 4
    assert decode_charge(progressive, open_header(progressive, 10**8)) == w * h * (4 + 2 * 3)


MEASURE = textwrap.dedent(
    """
    import json, sys
    from oiv4.io.strict_decode import decode_charge, decode_strict, open_header

    def status(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

    data = open(sys.argv[1], "rb").read()
    header = open_header(data, 10**9)
    charge = decode_charge(data, header)
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    before = status("VmRSS:")
    decode_strict(data, max_pixels=10**9, target_side=1024)
    peak = status("VmHWM:")
    print(json.dumps({"charge": charge, "held": peak - before}))
    """
)


def test_a_progressive_decode_holds_no_more_than_its_charge(tmp_path: Path) -> None:
    """Measured in a fresh process: the peak RSS a scaled decode of a 16 MP progressive 4:4:4 JPEG adds stays
    within the charge (the old 4 B/pixel charge is below what the decoder holds: ~6 B/pixel)."""
    w, h = 4096, 4096
    path = tmp_path / "progressive.jpg"
    path.write_bytes(_jpeg((w, h), progressive=True, subsampling=0))
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    got = json.loads(out.stdout)
    assert got["held"] > w * h * 4, got  # what the old charge claimed was the most it would hold
    assert got["held"] <= got["charge"], got
