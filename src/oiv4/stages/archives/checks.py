"""How an archive's bytes are trusted (published table, ETag, size), and when an archive counts as done."""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow.compute as pc

from oiv4.contracts.errors import ArchiveError, VerificationError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.io.ledger import read_shard, shard_has_parts
from oiv4.io.storage import Storage
from oiv4.stages.archives.catalog import KnownArchive, shard_of
from oiv4.stages.archives.convert import ConvertOutcome
from oiv4.stages.archives.settings import ArchiveSettings
from oiv4.stages.archives.sources import RemoteObject, Source


@dataclass(frozen=True)
class Check:
    known: KnownArchive | None
    etag_md5: str | None
    description: str
    short: str  # for tables: "published SHA-256", "ETag MD5", "size + ETag", "size only"


def plan_check(
    obj: RemoteObject, source: Source, settings: ArchiveSettings, table: Mapping[str, KnownArchive]
) -> Check:
    known = table.get(obj.name)
    required = source.official if settings.require_published is None else settings.require_published
    if required:
        if known is None:
            raise VerificationError(obj.name, "is not in the published table of CVDF archives; refusing to use it")
        if obj.size != known.bytes:
            raise VerificationError(
                obj.name,
                f"is {obj.size:,} bytes at {obj.url}, the published size is {known.bytes:,}: not the published archive",
            )
    if known is not None and obj.size == known.bytes:
        return Check(known, None, "size and SHA-256 match the published table", "published SHA-256")
    why = (
        "not in the published table"
        if known is None
        else f"not the published archive ({obj.size:,} bytes, published {known.bytes:,})"
    )
    if obj.etag_md5:
        return Check(None, obj.etag_md5, f"{why}: verified by size and ETag (the MD5 of the content)", "ETag MD5")
    if obj.etag:
        return Check(
            None,
            None,
            f"{why}: verified by size and ETag (unchanged across every part; the ETag is not an MD5)",
            "size + ETag",
        )
    return Check(None, None, f"{why}: verified by size only (the source gives no ETag)", "size only")


def verify_copy(archive: str, out: ConvertOutcome, obj: RemoteObject, check: Check) -> None:
    if out.compressed_bytes != obj.size:
        raise VerificationError(
            archive, f"read {out.compressed_bytes:,} bytes, the source says {obj.size:,}: incomplete archive"
        )
    if check.known is not None and out.sha256 != check.known.sha256:
        raise VerificationError(
            archive, f"SHA-256 is {out.sha256}, the published one is {check.known.sha256}: corrupt copy"
        )
    if check.etag_md5 is not None and out.md5 != check.etag_md5:
        raise VerificationError(archive, f"MD5 is {out.md5}, the ETag says {check.etag_md5}: corrupt copy")


# ---- done-ness --------------------------------------------------------------------------------------


def archive_done(storage: Storage, image_set: ImageSet | str, stem: str) -> bool:
    """True when the archive's zip and its compacted ledger agree (same number of stored images)."""
    image_set = ImageSet(image_set)
    shard = shard_of(stem)
    zip_rel = LAYOUT.archive_zip(image_set, stem)
    if not storage.exists(zip_rel) or not storage.exists(LAYOUT.ledger_shard(image_set, shard)):
        return False
    if shard_has_parts(storage, image_set, shard):
        return False
    table = read_shard(storage, image_set, shard)
    if table.num_rows == 0:
        return False
    stored = pc.sum(
        pc.and_(pc.equal(table["outcome"], Outcome.ok.value), pc.starts_with(table["location"], zip_rel + ":"))
    )
    try:
        with storage.open(zip_rel) as fh, zipfile.ZipFile(fh) as zf:
            entries = len(zf.infolist())
    except (OSError, zipfile.BadZipFile):
        return False
    return (stored.as_py() or 0) == entries


def check_zip(storage: Storage, archive: str, zip_rel: str, out: ConvertOutcome) -> int:
    """Read the written zip's central directory back; it must list exactly the stored members."""
    try:
        with storage.open(zip_rel) as fh, zipfile.ZipFile(fh) as zf:
            names = [i.filename for i in zf.infolist()]
    except (OSError, zipfile.BadZipFile) as exc:
        raise ArchiveError(archive, f"the zip just written cannot be read back ({exc})") from exc
    ok_rows = sum(1 for r in out.rows if r.outcome == Outcome.ok)
    if Counter(names) != Counter(out.stored_names) or len(names) != ok_rows:
        raise ArchiveError(
            archive,
            f"zip central directory lists {len(names):,} entries but {ok_rows:,} images were recorded as stored",
        )
    return storage.size(zip_rel)


def inside_root(storage: Storage, rel: str) -> str:
    """Every path we write is a fixed LAYOUT path of a checked stem; assert it stays under the root."""
    assert ".." not in rel.split("/") and not rel.startswith("/"), rel
    assert storage.within_root(rel), rel
    return rel
