"""Member checks: which tar members may become zip entries, and why the others are refused.

Only a regular file named exactly `<prefix>/<16 lowercase hex>.jpg` (with the archive's own hex digit
for `train_<x>`), no larger than the cap, starting like a JPEG, and seen for the first time is stored.
Everything else gets a recorded reason; nothing from a member name ever becomes a filesystem path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from oiv4.contracts.schema import Outcome
from oiv4.stages.archives.tarstream import TarMember
from oiv4.stages.archives.zipwriter import MAX_MEMBER

DEFAULT_MAX_MEMBER_BYTES = 50_000_000
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Verdict:
    """`image_id` is set when the name is well formed (even if the member is refused for another reason)."""

    image_id: str | None
    outcome: str | None  # None: store it
    reason: str = ""
    name: str = ""  # the member name to store under (a leading "./" dropped)


def normalized(name: str) -> str:
    """`./train_0/x.jpg` -> `train_0/x.jpg`: a leading `./` (tar run from inside the parent) means nothing."""
    while name.startswith("./"):
        name = name[2:]
    return name


def printable(name: str, limit: int = 120) -> str:
    """A member name safe to show in a message or a ledger cell."""
    r = repr(name)
    return r if len(r) <= limit else r[: limit - 3] + "..."


class MemberChecker:
    """Stateful (it remembers names already seen) checker for one archive's members."""

    def __init__(self, stem: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> None:
        self.stem = stem
        # STORED members without Zip64 sizes must stay under 4 GiB; no JPEG comes anywhere near.
        self.max_member_bytes = min(max_member_bytes, MAX_MEMBER)
        self._name_re = re.compile(rf"^{re.escape(stem)}/([0-9a-f]{{16}})\.jpg$")
        self._digit = stem[-1] if stem.startswith("train_") else None
        self._seen: set[str] = set()

    def is_own_dir(self, m: TarMember) -> bool:
        """The archive's top-level folder entry (`train_3/`): structure, not an image."""
        return m.kind == "dir" and normalized(m.name).rstrip("/") in (self.stem, "", ".")

    def check(self, m: TarMember) -> Verdict:
        name = normalized(m.name)
        match = self._name_re.match(name)
        image_id = match.group(1) if match else None
        shown = printable(m.name)
        if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name):
            return Verdict(image_id, Outcome.hostile_member, f"absolute path {shown} refused")
        parts = re.split(r"[\\/]", name)
        if ".." in parts:
            return Verdict(image_id, Outcome.hostile_member, f"path traversal ('..') in {shown} refused")
        if "\0" in name or "\ufffd" in name or any(ord(c) < 32 for c in name):
            return Verdict(image_id, Outcome.hostile_member, f"control or non-UTF-8 bytes in member name {shown}")
        if m.kind == "symlink":
            return Verdict(image_id, Outcome.hostile_member, f"symlink {shown} -> {printable(m.linkname)} refused")
        if m.kind == "hardlink":
            return Verdict(image_id, Outcome.hostile_member, f"hard link {shown} -> {printable(m.linkname)} refused")
        if m.kind in ("chardev", "blockdev", "fifo"):
            return Verdict(image_id, Outcome.hostile_member, f"{m.kind} {shown} refused: not a regular file")
        if m.kind == "dir":
            return Verdict(image_id, Outcome.hostile_member, f"unexpected directory {shown}")
        if m.kind != "file":
            return Verdict(image_id, Outcome.hostile_member, f"unsupported tar member {m.kind} for {shown}")
        if image_id is None:
            return Verdict(None, Outcome.hostile_member, f"name {shown} is not {self.stem}/<16 lowercase hex>.jpg")
        if self._digit is not None and image_id[0] != self._digit:
            return Verdict(image_id, Outcome.hostile_member, f"{shown} belongs in train_{image_id[0]}, not {self.stem}")
        if name in self._seen:
            return Verdict(image_id, Outcome.hostile_member, f"duplicate member {shown}: the first copy is kept")
        self._seen.add(name)
        if m.size > self.max_member_bytes:
            return Verdict(
                image_id,
                Outcome.hostile_member,
                f"{shown}: {m.size:,} bytes exceeds the member cap of {self.max_member_bytes:,} bytes",
            )
        return Verdict(image_id, None, name=name)


def check_jpeg(head: bytes) -> str | None:
    """None when `head` starts like a JPEG, else the reason it is not one."""
    if head.startswith(JPEG_MAGIC):
        return None
    if not head:
        return "empty member"
    return f"not a JPEG (starts with {head[:8].hex()})"


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) from the first SOF marker, reading only the headers; None if not found."""
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        seg = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > n:
                return None
            h = int.from_bytes(data[pos + 5 : pos + 7], "big")
            w = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return (w, h) if w and h else None
        if marker == 0xDA:  # start of scan before any SOF: give up
            return None
        pos += 2 + seg
    return None
