"""Decoded pixels in flight are capped per worker: giant images decoded at once never exceed the budget."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from oiv4.io.memory_budget import MemoryBudget, decoded_bytes
from oiv4.stages.fetch.settings import FetchSettings, TransformSettings
from oiv4.stages.fetch.transform import check_stored, transform_image


def _giant_png(w: int, h: int, shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (shade, 255 - shade, 90)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_several_giant_images_at_once_never_hold_more_than_the_budget():
    giants = [_giant_png(5000, 4000, 40 * i) for i in range(6)]  # 20 MP each: 80 MB decoded (4 B/pixel)
    one = decoded_bytes(5000, 4000, 16)  # what transform_image charges per PNG pixel
    budget = MemoryBudget(2 * one + one // 2)  # room for two at once, not three
    with ThreadPoolExecutor(6) as pool:
        stored = list(pool.map(lambda d: transform_image(d, 0.0, TransformSettings(), budget=budget), giants))
    assert [s.stored_size for s in stored] == [(1024, 819)] * 6
    assert budget.peak <= budget.capacity  # the cap held
    assert budget.peak >= 2 * one  # and it was the cap that limited them: two ran side by side
    assert budget.in_use == 0 and budget.waiting == 0  # everything given back


def test_an_image_larger_than_the_whole_budget_runs_alone_instead_of_failing():
    budget = MemoryBudget(decoded_bytes(1000, 1000, 16))
    out = transform_image(_giant_png(3000, 2000, 7), 0.0, TransformSettings(), budget=budget)
    assert out.stored_size == (1024, 683) and budget.peak == budget.capacity and budget.in_use == 0
    assert check_stored(out.data, 10**9, budget).size == (1024, 683)


def test_the_budget_is_a_fetch_setting_in_mib_on_the_command_line():
    assert FetchSettings().decode_budget_bytes == 1024 << 20
    field = FetchSettings.__dataclass_fields__["decode_budget_bytes"]
    assert field.metadata["flag"] == "--decode-budget-mb" and field.metadata["scale"] == 1 << 20
