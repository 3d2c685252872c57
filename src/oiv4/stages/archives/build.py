"""Build targets / validation from the CVDF archives: download (or stream), verify, convert, record.

Per archive (one ledger shard each), in order:
1. `stat` at the source; with the published table in force, a wrong size fails before any byte moves.
2. Download to `LAYOUT.archive_tar` (parallel ranged parts, resumable), or stream it (`stream=True`),
   or read it in place from a local source folder. The next archive downloads while this one converts.
3. One pass: inflate, check members, write the zip through `Storage.open_atomic`, hash the compressed
   bytes. A decoder that rejects the stream is retried with the next one (`decoders`); size and SHA-256
   (or the ETag's MD5) must match before the zip is allowed to appear at its final path.
4. The zip's central directory is read back and compared with the rows about to be recorded; then the
   ledger rows are written and compacted, which is what marks the archive done. A done archive is
   skipped on the next run; a kill anywhere before that redoes this archive's conversion only, reusing
   the downloaded `.tar.gz`, which is deleted after success unless `keep_tar`.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import pyarrow.compute as pc

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.schema import ImageSet, Outcome
from oiv4.contracts.shards import ShardResult, ShardTask
from oiv4.io.ledger import ShardLedger, read_shard
from oiv4.io.storage import TMP_MARK, Storage
from oiv4.io.temps import remove_dead_temps
from oiv4.stages.archives.catalog import (
    KnownArchive,
    all_stems,
    archive_name,
    load_known_archives,
    rows_by_stem,
    shard_of,
)
from oiv4.stages.archives.convert import ConvertOutcome, convert_stream
from oiv4.stages.archives.download import (
    DownloadResult,
    TransferSettings,
    download_to_storage,
    stat_object,
    stream_parts,
)
from oiv4.stages.archives.errors import (
    ArchiveError,
    ArchiveSetError,
    CorruptStreamError,
    VerificationError,
)
from oiv4.stages.archives.gunzip import DECODERS, DEFAULT_DECODERS, decoder_available
from oiv4.stages.archives.members import DEFAULT_MAX_MEMBER_BYTES
from oiv4.stages.archives.sources import CVDF_S3, RemoteObject, Source, make_source

READ_CHUNK = 8 << 20


@dataclass(frozen=True)
class ArchiveSettings:
    """How an archive set is built. Defaults fetch from the public CVDF bucket, anonymously."""

    source: str = CVDF_S3  # s3://bucket/prefix/, http(s)://host/prefix/, or a local folder
    s3_endpoint: str | None = None  # e.g. http://127.0.0.1:5000 for a moto server
    part_size: int = 64 << 20
    connections: int = 8
    attempts: int = 5  # per part
    backoff_s: float = 1.0
    checkpoint_s: float = 2.0  # a killed download loses at most this many seconds of progress
    timeout_s: float = 120.0
    keep_tar: bool = False  # keep `<set>/images/<archive>.tar.gz` (feature extraction reads it)
    stream: bool = False  # network -> zip with no .tar.gz on disk at all
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    decoders: tuple[str, ...] = DEFAULT_DECODERS  # tried in order; later ones are fallbacks
    require_published: bool | None = None  # None: required when the source is the real CVDF bucket
    known: Mapping[str, KnownArchive] | None = field(default=None, hash=False)  # None: the packaged table
    only: tuple[str, ...] = ()  # restrict to these archive stems, e.g. ("train_3",)

    @property
    def transfer(self) -> TransferSettings:
        return TransferSettings(self.part_size, self.connections, self.attempts, self.backoff_s, self.checkpoint_s)


class ArchiveProgress:
    """Progress events; the CLI renders them with rich, the API default ignores them.

    Methods are called from download and conversion threads: implementations must be thread-safe.
    """

    def begin(self, stage: str, name: str, total: int | None) -> None:
        """`stage` is "download" or "convert"; `total` in bytes (compressed)."""

    def advance(self, stage: str, name: str, n: int) -> None:
        pass

    def end(self, stage: str, name: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class ArchiveReport:
    """What happened to one archive."""

    name: str
    shard: int
    status: str  # "converted", "done_before" or "failed"
    verification: str = ""  # how the archive's bytes were verified, in a sentence
    verified_by: str = ""  # the same in two words; "published SHA-256" only for the real archives
    outcomes: dict[str, int] = field(default_factory=dict)
    members: int = 0
    bytes_downloaded: int = 0
    parts_resumed: int = 0
    compressed_bytes: int = 0
    sha256: str = ""  # of the .tar.gz as read (always computed: it is the archive's identity)
    zip_bytes: int = 0
    decoder: str = ""
    elapsed_s: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ArchiveSetSummary:
    """What `build_archive_set` did; details per image are in the ledger."""

    image_set: str
    source: str
    archives: list[ArchiveReport] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def failed(self) -> list[ArchiveReport]:
        return [a for a in self.archives if a.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def outcomes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for a in self.archives:
            total.update(a.outcomes)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "outcomes": dict(self.outcomes)}


# ---- verification policy --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    known: KnownArchive | None
    etag_md5: str | None
    description: str
    short: str  # for tables: "published SHA-256", "ETag MD5", "size + ETag", "size only"


def _plan_check(
    obj: RemoteObject, source: Source, settings: ArchiveSettings, table: Mapping[str, KnownArchive]
) -> _Check:
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
        return _Check(known, None, "size and SHA-256 match the published table", "published SHA-256")
    why = (
        "not in the published table"
        if known is None
        else f"not the published archive ({obj.size:,} bytes, published {known.bytes:,})"
    )
    if obj.etag_md5:
        return _Check(None, obj.etag_md5, f"{why}: verified by size and ETag (the MD5 of the content)", "ETag MD5")
    if obj.etag:
        return _Check(
            None,
            None,
            f"{why}: verified by size and ETag (unchanged across every part; the ETag is not an MD5)",
            "size + ETag",
        )
    return _Check(None, None, f"{why}: verified by size only (the source gives no ETag)", "size only")


def _verify(archive: str, out: ConvertOutcome, obj: RemoteObject, check: _Check) -> None:
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
    if storage.glob(f"{LAYOUT.ledger_parts_dir(image_set, shard)}/part-*.parquet"):
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


def _check_zip(storage: Storage, archive: str, zip_rel: str, out: ConvertOutcome) -> int:
    """Read the written zip's central directory back; it must list exactly the stored members."""
    try:
        with storage.open(zip_rel) as fh, zipfile.ZipFile(fh) as zf:
            names = [i.filename for i in zf.infolist()]
    except (OSError, zipfile.BadZipFile) as exc:
        raise ArchiveError(archive, f"the zip just written cannot be read back ({exc})") from exc
    ok_rows = sum(1 for r in out.rows if r["outcome"] == Outcome.ok)
    if Counter(names) != Counter(out.stored_names) or len(names) != ok_rows:
        raise ArchiveError(
            archive,
            f"zip central directory lists {len(names):,} entries but {ok_rows:,} images were recorded as stored",
        )
    return storage.size(zip_rel)


def _inside_root(storage: Storage, rel: str) -> str:
    """Every path we write is a fixed LAYOUT path of a checked stem; assert it stays under the root."""
    assert ".." not in rel.split("/") and not rel.startswith("/"), rel
    if storage.local:
        root = Path(storage.root).resolve()
        assert storage.local_path(rel).resolve().is_relative_to(root), rel
    return rel


# ---- one archive ------------------------------------------------------------------------------------


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            yield chunk


@dataclass
class _Fetched:
    obj: RemoteObject
    check: _Check
    local: Path | None  # a file to read; None in stream mode
    downloaded: DownloadResult | None  # None when nothing had to be downloaded
    we_own_file: bool  # the file is our download (deleted when done / when corrupt), not the user's


class _Builder:
    def __init__(
        self, storage: Storage, image_set: ImageSet, settings: ArchiveSettings, progress: ArchiveProgress
    ) -> None:
        self.storage = storage
        self.image_set = image_set
        self.settings = settings
        self.progress = progress
        self.table = dict(settings.known) if settings.known is not None else load_known_archives()
        self.cancel = threading.Event()  # set on Ctrl-C / any exit: in-flight transfers stop within a chunk
        try:
            self.source = make_source(settings.source, settings.s3_endpoint, settings.connections, settings.timeout_s)
        except ValueError as exc:
            raise ArchiveSetError(str(exc)) from exc

    # -- fetching ------------------------------------------------------------------------------------
    def _stat(self, name: str) -> RemoteObject:
        return stat_object(self.source, name, self.settings.transfer)  # retried under the shared policy

    def fetch(self, stem: str) -> _Fetched:
        name = archive_name(stem)
        obj = self._stat(name)
        check = _plan_check(obj, self.source, self.settings, self.table)
        in_place = self.source.local_path(name)
        if in_place is not None:
            return _Fetched(obj, check, in_place, None, False)
        if self.settings.stream:
            return _Fetched(obj, check, None, None, False)
        if not self.storage.local:
            raise ArchiveError(
                name, f"cannot download to {self.storage.root}: use stream=True (--stream) for a remote root"
            )
        tar_rel = _inside_root(self.storage, LAYOUT.archive_tar(self.image_set, stem))
        self.progress.begin("download", name, obj.size)
        try:
            result = download_to_storage(
                self.source,
                obj,
                self.storage,
                tar_rel,
                self.settings.transfer,
                lambda n: self.progress.advance("download", name, n),
                self.cancel,
            )
        finally:
            self.progress.end("download", name)
        return _Fetched(obj, check, self.storage.local_path(tar_rel), result, True)

    # -- converting ----------------------------------------------------------------------------------
    def convert(self, stem: str, fetched: _Fetched, plan_rows: dict[str, int], report: ArchiveReport) -> None:
        s, st = self.settings, self.storage
        name = archive_name(stem)
        zip_rel = _inside_root(st, LAYOUT.archive_zip(self.image_set, stem))
        tar_rel = _inside_root(st, LAYOUT.archive_tar(self.image_set, stem))
        # Keep a copy of the .tar.gz only when it is not already at its final place.
        tee_tar = s.keep_tar and (fetched.local is None or not _same_file(fetched.local, st, tar_rel))
        _remove_stale_temps(st, zip_rel)
        _remove_stale_temps(st, tar_rel)
        if st.local:
            # The zip of JPEGs is the size of the .tar.gz (+ the copy with keep_tar): fail now, not hours in.
            need = int(fetched.obj.size * (2.01 if tee_tar else 1.01))
            free = _free_bytes(st.local_path(zip_rel))
            if need > free:
                raise ArchiveError(
                    name, f"needs about {need:,} bytes of free disk for the zip, {free:,} free at {st.root}"
                )
        failures: list[CorruptStreamError] = []
        out: ConvertOutcome | None = None
        for decoder in s.decoders:
            if not decoder_available(decoder):
                report.notes.append(f"decoder {decoder} is not installed here: skipped")
                continue
            chunks = (
                _file_chunks(fetched.local)
                if fetched.local is not None
                else stream_parts(self.source, fetched.obj, s.transfer, cancel=self.cancel)
            )
            self.progress.begin("convert", name, fetched.obj.size)
            try:
                with st.open_atomic(zip_rel) as fh, _maybe_atomic(st, tar_rel if tee_tar else None) as tee:
                    out = convert_stream(
                        archive=name,
                        stem=stem,
                        shard=shard_of(stem),
                        zip_rel=zip_rel,
                        chunks=chunks,
                        out=fh,
                        decoder=decoder,
                        plan_rows=plan_rows,
                        max_member_bytes=s.max_member_bytes,
                        source_url=fetched.obj.url,
                        want_md5=fetched.check.etag_md5 is not None,
                        tee=tee,
                        progress=lambda n: self.progress.advance("convert", name, n),
                    )
                    _verify(name, out, fetched.obj, fetched.check)
                report.decoder = decoder
                break
            except CorruptStreamError as exc:
                failures.append(exc)
                self.progress.message(f"{exc}; trying the next decoder")
                continue
            except VerificationError as exc:
                if fetched.we_own_file and fetched.local is not None:
                    fetched.local.unlink(missing_ok=True)
                    raise VerificationError(
                        name, f"{exc.detail}; the download was deleted, re-run to fetch it again"
                    ) from exc
                raise
            finally:
                self.progress.end("convert", name)
                if hasattr(chunks, "close"):
                    chunks.close()
        if out is None:
            if not failures:
                raise ArchiveError(name, f"none of the decoders {', '.join(s.decoders)} is installed")
            tried = "; ".join(f"{f.decoder}: {f.detail} at {f.where}" for f in failures)
            hint = (
                f" The downloaded copy may be damaged: delete {fetched.local} and re-run to download it again."
                if fetched.we_own_file
                else ""
            )
            raise ArchiveError(name, f"corrupt gzip stream, every decoder failed ({tried}).{hint}") from failures[-1]
        if failures:
            report.notes.append(
                f"decoder {failures[0].decoder} failed ({failures[0].detail}); {report.decoder} succeeded"
            )
        report.notes.extend(out.notes)
        report.zip_bytes = _check_zip(st, name, zip_rel, out)
        st.sync()  # the zip is durable before any ledger row points into it
        self._record(stem, out.rows)
        report.members = out.members
        report.outcomes = {str(k): n for k, n in out.outcomes.items()}
        report.compressed_bytes = out.compressed_bytes
        report.sha256 = out.sha256
        if fetched.we_own_file and not s.keep_tar and fetched.local is not None:
            st.remove(tar_rel)

    def _record(self, stem: str, rows: list[dict[str, Any]]) -> None:
        shard = shard_of(stem)
        # Rows of an earlier, unfinished conversion of this archive describe a zip that no longer exists.
        self.storage.remove(LAYOUT.ledger_shard(self.image_set, shard))
        self.storage.remove(LAYOUT.ledger_parts_dir(self.image_set, shard))
        ledger = ShardLedger(self.storage, self.image_set, shard, flush_rows=len(rows) + 1)
        for r in rows:
            ledger.record(**r)
        ledger.close()


def _remove_stale_temps(storage: Storage, rel: str) -> None:
    """Delete temp files of `rel` left by a killed process (a live writer's temp is left alone)."""
    remove_dead_temps(storage, [f"{rel}{TMP_MARK}*"])


def _free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that will hold `path` (its nearest existing ancestor)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _same_file(path: Path, storage: Storage, rel: str) -> bool:
    return storage.local and path.resolve() == storage.local_path(rel).resolve()


@contextlib.contextmanager
def _maybe_atomic(storage: Storage, rel: str | None) -> Iterator[IO[bytes] | None]:
    if rel is None:
        yield None
    else:
        with storage.open_atomic(rel) as fh:
            yield fh


# ---- the set ----------------------------------------------------------------------------------------


class _PlanRows:
    """The set's plan rows grouped by archive; the per-archive ImageID -> row maps are built on demand
    (1.7M targets rows: no point building sixteen dicts when fifteen archives are already done)."""

    def __init__(self, storage: Storage, image_set: ImageSet) -> None:
        from oiv4.io.manifest import read_manifest

        if not storage.exists(LAYOUT.plan(image_set)):
            raise ArchiveSetError(
                f"no plan for {image_set.value} at {storage.path(LAYOUT.plan(image_set))}: run `oiv4 plan` first"
            )
        table = read_manifest(storage, image_set, columns=["ImageID", "row"])
        self._ids = table["ImageID"]
        self._rows = table["row"].to_numpy()
        self.groups = rows_by_stem(image_set, self._ids, self._rows)

    def __contains__(self, stem: str) -> bool:
        return stem in self.groups

    def __getitem__(self, stem: str) -> dict[str, int]:
        idx = self.groups[stem]
        ids = self._ids.take(idx).to_pylist()
        return dict(zip(ids, self._rows[idx].tolist(), strict=True))


def _convert_in_order(builder: _Builder, todo: list[str], groups: _PlanRows) -> list[ArchiveReport]:
    """Fetch and convert `todo` in order, one download running ahead of the conversion in progress:
    network and CPU overlap, and at most two .tar.gz files are on disk at once."""
    reports: list[ArchiveReport] = []
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oiv4-fetch")
    futures: dict[int, Future[_Fetched]] = {}
    finished = False

    def ensure(i: int) -> None:
        if i < len(todo) and i not in futures:
            futures[i] = pool.submit(builder.fetch, todo[i])

    try:
        for i, stem in enumerate(todo):
            ensure(i)
            ensure(i + 1)
            report = ArchiveReport(archive_name(stem), shard_of(stem), "converted")
            t = time.monotonic()
            try:
                fetched = futures.pop(i).result()
                report.verification = fetched.check.description
                report.verified_by = fetched.check.short
                if fetched.downloaded is not None:
                    report.bytes_downloaded = fetched.downloaded.bytes_fetched
                    report.parts_resumed = fetched.downloaded.parts_resumed
                    if fetched.downloaded.note:
                        report.notes.append(fetched.downloaded.note)
                builder.convert(stem, fetched, groups[stem], report)
                if builder.settings.stream:
                    report.bytes_downloaded = report.compressed_bytes
            except ArchiveError as exc:
                report.status = "failed"
                report.error = str(exc)
                builder.progress.message(str(exc))
            except OSError as exc:  # disk full, permissions: this archive fails, the message says where
                report.status = "failed"
                why = "disk full" if exc.errno == errno.ENOSPC else "I/O error"
                report.error = f"{archive_name(stem)}: {why}: {exc}"
                builder.progress.message(report.error)
            report.elapsed_s = round(time.monotonic() - t, 3)
            reports.append(report)
        finished = True
    finally:
        builder.cancel.set()  # Ctrl-C or an error: stop the download running ahead, keep its parts
        # On Ctrl-C, do not wait for a transfer blocked in a socket read: it ends at its next chunk.
        pool.shutdown(wait=finished, cancel_futures=True)
    return reports


def build_archive_set(
    storage: Storage,
    image_set: ImageSet | str,
    settings: ArchiveSettings | None = None,
    progress: ArchiveProgress | None = None,
) -> ArchiveSetSummary:
    """Download, verify and convert the archives of `targets` or `validation` under `storage`.

    Only the archives the plan needs are touched (targets: `train_<x>` for each hex digit starting a
    boxable ID); archives already done are skipped. A failing archive is reported in the summary (its
    `error` says why and what to do) and the others still run. Raises ArchiveSetError when nothing can
    be done at all (no plan, bad source).
    """
    t0 = time.monotonic()
    image_set = ImageSet(image_set)
    if not image_set.from_archives:
        raise ArchiveSetError(f"{image_set.value} is not an archive set: use targets or validation")
    settings = settings or ArchiveSettings()
    progress = progress or ArchiveProgress()
    unknown = [d for d in settings.decoders if d not in DECODERS]
    if unknown or not settings.decoders:
        raise ArchiveSetError(f"unknown decoder(s) {unknown}; choose from {', '.join(DECODERS)}")
    if settings.stream and settings.keep_tar:
        raise ArchiveSetError("stream and keep_tar exclude each other: streaming writes no .tar.gz at all")
    if settings.part_size < 1 or settings.connections < 1 or settings.max_member_bytes < 1:
        raise ArchiveSetError("part_size, connections and max_member_bytes must be positive")
    groups = _PlanRows(storage, image_set)
    for stem in settings.only:
        if stem not in all_stems(image_set):
            raise ArchiveSetError(f"--only {stem!r}: not an archive of {image_set.value}")
        if stem not in groups:
            progress.message(f"{archive_name(stem)}: no image of the {image_set.value} plan is in it, nothing to do")
    stems = [s for s in sorted(groups.groups) if not settings.only or s in settings.only]
    builder = _Builder(storage, image_set, settings, progress)
    summary = ArchiveSetSummary(image_set.value, builder.source.description)
    todo: list[str] = []
    for stem in stems:
        if archive_done(storage, image_set, stem):
            done = ArchiveReport(archive_name(stem), shard_of(stem), "done_before")
            vc = pc.value_counts(read_shard(storage, image_set, shard_of(stem))["outcome"]).to_pylist()
            done.outcomes = {d["values"]: d["counts"] for d in vc}
            summary.archives.append(done)
        else:
            todo.append(stem)

    summary.archives += _convert_in_order(builder, todo, groups)
    summary.archives.sort(key=lambda a: a.name)
    summary.elapsed_s = round(time.monotonic() - t0, 3)
    return summary


def run_archive_shard(task: ShardTask) -> ShardResult:
    """Executor entry point: build one archive (`task.name`, e.g. "train_3") of `task.image_set`."""
    settings = task.settings if isinstance(task.settings, ArchiveSettings) else ArchiveSettings()
    storage = Storage(task.root, task.storage_options)
    summary = build_archive_set(storage, task.image_set, replace(settings, only=(task.name,)))
    result = ShardResult(task.image_set, task.shard)
    for a in summary.archives:
        if a.status == "failed":
            raise ArchiveError(a.name, a.error or "failed")
        result.outcomes.update(a.outcomes)
        result.bytes_downloaded += a.bytes_downloaded
        result.elapsed_s += a.elapsed_s
    return result
