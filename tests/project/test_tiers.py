"""`make test-fast` stays a true subset: every test file is placed in a tier, and the placing can be checked.

support/tiers.py names each file fast or slow and holds each costly test's measured seconds; conftest marks the
fast ones. A new file placed nowhere, a placed file that is gone, or a measured test that no longer exists
(renamed, a slow test would silently join the fast subset) fails here, and so does a folder of tests (a layer)
with no fast file. Each rule is shown to catch a planted case.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support import tiers

#: The folder of the root conftest, wherever under it this file lives.
TESTS = next(p for p in Path(__file__).resolve().parents if (p / "conftest.py").exists())


def test_every_test_file_is_placed_in_a_tier_and_every_placed_file_exists() -> None:
    assert tiers.misplaced(TESTS) == []


def test_every_measured_test_exists() -> None:
    assert tiers.unknown_tests(TESTS) == []


def test_every_folder_of_tests_has_fast_tests_so_the_subset_covers_each_layer() -> None:
    assert tiers.folders_without_fast_files(TESTS) == []


def test_the_checks_see_an_unplaced_file_a_vanished_one_a_renamed_test_and_a_layer_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "test_placed.py").write_text("def test_quick():\n    pass\n\ndef test_renamed():\n    pass\n")
    (tmp_path / "test_new.py").write_text("def test_x():\n    pass\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "test_soaking.py").write_text("def test_soak():\n    pass\n")
    monkeypatch.setattr(tiers, "FILES", {"test_placed.py": "fast", "test_gone.py": "slow", "test_soaking.py": "slow"})
    monkeypatch.setattr(tiers, "SECONDS", {"test_placed.py::test_old_name": 9.0, "test_placed.py::test_quick": 60.0})
    assert tiers.misplaced(tmp_path) == ["test_gone.py: placed in a tier but missing", "test_new.py: in no tier"]
    assert tiers.unknown_tests(tmp_path) == ["test_placed.py::test_old_name"]
    assert tiers.is_fast("test_placed.py", "test_renamed") and not tiers.is_fast("test_placed.py", "test_quick")
    assert not tiers.is_fast("test_gone.py", "test_anything")
    assert tiers.folders_without_fast_files(tmp_path) == ["run"]
