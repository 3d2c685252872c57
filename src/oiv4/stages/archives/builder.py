"""One archive: fetch it (download, stream, or read in place), convert it in one pass, verify, record.

The steps, per archive (one ledger shard each):
1. `stat` at the source; with the published table in force, a wrong size fails before any byte moves.
2. Download to `LAYOUT.archive_tar` (parallel ranged parts, resumable), or stream it (`stream=True`),
   or read it in place from a local source folder.
3. One pass: inflate, check members, write the zip through `Storage.open_atomic`, hash the compressed
   bytes. A decoder that rejects the stream is retried with the next one (`decoders`); size and SHA-256
   (or the ETag's MD5) must match before the zip is allowed to appear at its final path.
4. The zip's central directory is read back and compared with the rows about to be recorded; then the
   ledger rows are written and compacted, which is what marks the archive done. A kill anywhere before
   that redoes this archive's conversion only, reusing the downloaded `.tar.gz`, which is deleted after
   success unless `keep_tar`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from oiv4.contracts.errors import ArchiveError, ArchiveSetError, CorruptStreamError, SettingError, VerificationError
from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.ledger_row import LedgerRow
from oiv4.contracts.schema import ImageSet
from oiv4.io.ledger_write import LedgerBuffer
from oiv4.io.storage import TMP_MARK, Storage
from oiv4.io.temps import remove_dead_temps
from oiv4.stages.archives.catalog import archive_name, load_known_archives, shard_of
from oiv4.stages.archives.checks import Check, check_zip, inside_root, plan_check, verify_copy
from oiv4.stages.archives.convert import ConvertOutcome, convert_stream
from oiv4.stages.archives.download import DownloadResult, download_to_storage, stat_object, stream_parts
from oiv4.stages.archives.gunzip import decoder_available
from oiv4.stages.archives.settings import ArchiveProgress, ArchiveReport, ArchiveSettings
from oiv4.stages.archives.sources import RemoteObject, make_source

READ_CHUNK = 8 << 20


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            yield chunk


@dataclass
class Fetched:
    obj: RemoteObject
    check: Check
    local: Path | None  # a file to read; None in stream mode
    downloaded: DownloadResult | None  # None when nothing had to be downloaded
    we_own_file: bool  # the file is our download (deleted when done / when corrupt), not the user's


class ArchiveBuilder:
    """Fetches and converts the archives of one set under one root; `cancel` stops in-flight transfers."""

    def __init__(
        self,
        storage: Storage,
        image_set: ImageSet,
        settings: ArchiveSettings,
        progress: ArchiveProgress,
        cancel: threading.Event | None = None,
    ) -> None:
        self.storage = storage
        self.image_set = image_set
        self.settings = settings
        self.progress = progress
        self.table = dict(settings.known) if settings.known is not None else load_known_archives()
        # Set on Ctrl-C / an error elsewhere: in-flight transfers stop within a chunk.
        self.cancel = cancel if cancel is not None else threading.Event()
        try:
            self.source = make_source(settings.source, settings.s3_endpoint, settings.transfer)
        except SettingError as exc:
            raise ArchiveSetError(str(exc)) from exc

    # -- fetching ------------------------------------------------------------------------------------
    def _stat(self, name: str) -> RemoteObject:
        return stat_object(self.source, name, self.settings.transfer)  # retried under the shared policy

    def fetch(self, stem: str) -> Fetched:
        name = archive_name(stem)
        obj = self._stat(name)
        check = plan_check(obj, self.source, self.settings, self.table)
        in_place = self.source.local_path(name)
        if in_place is not None:
            return Fetched(obj, check, in_place, None, False)
        if self.settings.stream:
            return Fetched(obj, check, None, None, False)
        if self.storage.local_path("") is None:  # resumable parts need a local file
            raise ArchiveError(
                name, f"cannot download to {self.storage.root}: use stream=True (--stream) for a remote root"
            )
        tar_rel = inside_root(self.storage, LAYOUT.archive_tar(self.image_set, stem))
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
        return Fetched(obj, check, self.storage.local_path(tar_rel), result, True)

    # -- converting ----------------------------------------------------------------------------------
    # Kept long: each decoder attempt owns the atomic zip (and tar copy) it writes; every exit of an attempt (a
    # corrupt stream, a failed verification, success) must discard or publish them together, which one loop over
    # the decoders with one with-block per attempt shows.
    def convert(self, stem: str, fetched: Fetched, plan_rows: dict[str, int], report: ArchiveReport) -> None:
        s, st = self.settings, self.storage
        name = archive_name(stem)
        zip_rel = inside_root(st, LAYOUT.archive_zip(self.image_set, stem))
        tar_rel = inside_root(st, LAYOUT.archive_tar(self.image_set, stem))
        # Keep a copy of the .tar.gz only when it is not already at its final place.
        tee_tar = s.keep_tar and (fetched.local is None or not _same_file(fetched.local, st, tar_rel))
        _remove_stale_temps(st, zip_rel)
        _remove_stale_temps(st, tar_rel)
        # The zip of JPEGs is the size of the .tar.gz (+ the copy with keep_tar): fail now, not hours in.
        need = int(fetched.obj.size * (2.01 if tee_tar else 1.01))
        free = st.free_bytes(zip_rel)
        if free is not None and need > free:
            raise ArchiveError(name, f"needs about {need:,} bytes of free disk for the zip, {free:,} free at {st.root}")
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
                        image_set=self.image_set.value,
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
                    verify_copy(name, out, fetched.obj, fetched.check)
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
        report.zip_bytes = check_zip(st, name, zip_rel, out)
        st.sync()  # the zip is durable before any ledger row points into it
        self._record(stem, out.rows)
        report.members = out.members
        report.outcomes = {str(k): n for k, n in out.outcomes.items()}
        report.compressed_bytes = out.compressed_bytes
        report.sha256 = out.sha256
        if fetched.we_own_file and not s.keep_tar and fetched.local is not None:
            st.remove(tar_rel)

    def _record(self, stem: str, rows: list[LedgerRow]) -> None:
        shard = shard_of(stem)
        # Rows of an earlier, unfinished conversion of this archive describe a zip that is gone.
        self.storage.remove(LAYOUT.ledger_shard(self.image_set, shard))
        self.storage.remove(LAYOUT.ledger_parts_dir(self.image_set, shard))
        ledger = LedgerBuffer(self.storage, self.image_set, shard, flush_rows=len(rows) + 1)
        for r in rows:
            ledger.add(r)
        ledger.close()


def _remove_stale_temps(storage: Storage, rel: str) -> None:
    """Delete temp files of `rel` left by a killed process (a live writer's temp is left alone)."""
    remove_dead_temps(storage, [f"{rel}{TMP_MARK}*"])


def _same_file(path: Path, storage: Storage, rel: str) -> bool:
    target = storage.local_path(rel)
    return target is not None and path.resolve() == target.resolve()


@contextlib.contextmanager
def _maybe_atomic(storage: Storage, rel: str | None) -> Iterator[IO[bytes] | None]:
    if rel is None:
        yield None
    else:
        with storage.open_atomic(rel) as fh:
            yield fh
