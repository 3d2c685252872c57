"""`Storage(root)` picks its backend, travels to workers whole, and both backends answer the same operations.

The backends are `LocalStorage` (a folder) and `FsspecStorage` (any other fsspec URL; here S3 on moto). What only
one of them has (a disk to fill, symlinks, temp names, a local path) is a method each answers, so no code outside
`io/storage.py` asks which backend it holds.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from oiv4.contracts.errors import UnsafePath
from oiv4.io.safe_paths import TMP_MARK
from oiv4.io.storage import FsspecStorage, LocalStorage, Storage
from support import paths

SRC = paths.SRC


@pytest.mark.parametrize(
    ("root", "backend", "canonical"),
    [
        ("/data/oi", LocalStorage, "/data/oi"),
        ("file:///data/oi/", LocalStorage, "/data/oi"),
        ("s3://bucket/prefix/", FsspecStorage, "s3://bucket/prefix"),
        ("memory://scratch", FsspecStorage, "memory://scratch"),
    ],
)
def test_the_constructor_returns_the_backend_the_root_needs_and_it_pickles_whole(
    root: str, backend: type[Storage], canonical: str
) -> None:
    storage = Storage(root, {"anon": True})
    assert type(storage) is backend and isinstance(storage, Storage)
    assert storage.root == canonical and storage.storage_options == {"anon": True}
    back = pickle.loads(pickle.dumps(storage))
    assert type(back) is backend and back == storage


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "root"))
    root, options = request.getfixturevalue("s3_root")
    return Storage(root, options)


def test_both_backends_write_read_list_and_remove_alike(storage: Storage, tmp_path: Path) -> None:
    storage.write_bytes("a/b/one.bin", b"0123456789")
    with storage.open_atomic("a/two.bin") as fh:
        fh.write(b"two")
    src = tmp_path / "upload.bin"
    src.write_bytes(b"uploaded")
    storage.upload(src, "c/three.bin")
    assert storage.read_bytes("a/b/one.bin") == b"0123456789" and storage.size("a/two.bin") == 3
    assert storage.read_range("a/b/one.bin", 2, 3) == b"234" and storage.read_range("a/b/one.bin", 8, 5) == b"89"
    assert storage.read_bytes("c/three.bin") == b"uploaded"
    assert storage.glob("a/*.bin") == ["a/two.bin"] and storage.glob("a/**/*.bin") == ["a/b/one.bin", "a/two.bin"]
    assert sorted(storage.walk("a")) == [("a/b/one.bin", 10), ("a/two.bin", 3)] and list(storage.walk("none")) == []
    assert storage.within_root("a/b/one.bin") and storage.unreachable() is None
    storage.remove("a/b")
    storage.remove_empty_folder("a")  # not empty: kept
    assert not storage.exists("a/b/one.bin") and storage.exists("a/two.bin")
    storage.remove("a/two.bin")
    storage.remove_empty_folder("a")
    assert not storage.exists("a")
    storage.sync()


def test_only_a_folder_has_a_local_path_a_disk_temp_names_and_symlinks(tmp_path: Path, s3_root) -> None:
    folder, bucket = Storage(str(tmp_path / "root")), Storage(*s3_root)
    assert folder.local_path("x/y.jpg") == tmp_path / "root" / "x/y.jpg" and bucket.local_path("x/y.jpg") is None
    assert folder.free_bytes("not/yet/made") > 0 and bucket.free_bytes() is None
    assert not folder.round_trips and bucket.round_trips
    (tmp_path / "root" / "x").mkdir(parents=True)
    (tmp_path / "root" / "x" / f"y.jpg{TMP_MARK}1-ab").write_bytes(b"")
    assert folder.leftover_temps(f"x/*{TMP_MARK}*") == [f"x/y.jpg{TMP_MARK}1-ab"]
    bucket.write_bytes(f"x/y.jpg{TMP_MARK}1-ab", b"")  # a name like a temp's: no writer of ours leaves one there
    assert bucket.leftover_temps(f"x/*{TMP_MARK}*") == []
    (tmp_path / "root" / "ln").symlink_to(tmp_path)
    assert not folder.within_root("ln/elsewhere")
    with pytest.raises(UnsafePath):
        folder.refuse_symlinks("ln/y.jpg")
    bucket.refuse_symlinks("ln/y.jpg")


def storage_backend_branches(root: Path) -> list[str]:
    """`file:line` of every `.local` attribute read under `root` outside io/storage.py (Fetched.local and
    threading.local, a per-thread namespace, excepted)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        if path.as_posix().endswith("oiv4/io/storage.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "local"
                and ast.unparse(node.value) not in ("fetched", "threading")
            ):
                out.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_no_code_branches_on_which_backend_it_holds(tmp_path: Path) -> None:
    assert storage_backend_branches(SRC) == []
    (tmp_path / "m.py").write_text("def f(storage):\n    return 1 if storage.local else 2\n")
    assert storage_backend_branches(tmp_path) == ["m.py:2: storage.local"]
