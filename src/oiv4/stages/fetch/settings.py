"""Settings of the URL-set fetch stage: one frozen, picklable dataclass that travels with each shard."""

from __future__ import annotations

from dataclasses import dataclass, field

from oiv4.contracts.errors import SettingError
from oiv4.contracts.limits import above, at_least, within
from oiv4.contracts.schema import Outcome
from oiv4.contracts.setting import group, setting
from oiv4.contracts.transfer import TransferSettings

LAYOUTS: tuple[str, ...] = ("folder", "zip", "webdataset")
RESAMPLE_FILTERS: tuple[str, ...] = ("bicubic", "bilinear", "box", "lanczos")

#: Outcomes that say nothing about the image (the machine ran out of disk, a write failed): a later run
#: retries them without being asked, because the row never really had its chance.
ALWAYS_RETRIED: frozenset[str] = frozenset({Outcome.disk_full.value, Outcome.write_error.value})

#: A `blocked_address` reason for the one address class that `allow_private_networks` still refuses (the
#: unspecified address, 0.0.0.0 or ::; the words are `http.py`'s): such rows stay finished on every run.
STILL_BLOCKED_REASON = "leads to an unspecified address"

#: Original gone for good: the only outcomes for which `fallback_thumbnail` tries Thumbnail300KURL.
GONE_OUTCOMES: frozenset[str] = frozenset(
    {Outcome.placeholder.value, Outcome.http_403.value, Outcome.http_404.value, Outcome.http_410.value}
)


@dataclass(frozen=True)
class TransformSettings:
    """How a verified original becomes the stored JPEG."""

    max_side: int = setting(
        1024, help="Shrink to fit max_side x max_side, aspect kept; never enlarged.", flag="--max-side"
    )
    quality: int = setting(90, help="JPEG quality of the stored images, 1..100.", flag="--quality")
    rotate: bool = setting(
        True,
        help="Apply the CSV Rotation (CCW degrees). --no-rotate reproduces the notebook.",
        flag="--rotate/--no-rotate",
    )
    #: Refuse images above this many pixels *before* decoding. Real originals reach ~96 MP, so 200 MP keeps
    #: every real photo and still refuses bombs (a 30000x30000 PNG is 900 MP). Set explicitly because
    #: Pillow's own global default (~179 MP hard limit) would both refuse real photos near it and is global.
    max_pixels: int = setting(
        200_000_000,
        help="Largest image decoded, in megapixels (bigger ones: decompression_bomb). Real originals reach ~96 MP.",
        flag="--max-megapixels",
        scale=1_000_000,
        cli_type=float,
    )
    #: JPEGs are decoded at 1/2, 1/4 or 1/8 scale straight from the DCT (`Image.draft`) while still at least
    #: `draft_gap` times the final size; 0 decodes at full size. Measured on 2-12 MP photos: 1.0 takes half
    #: the decode+shrink time of 2.0 (Pillow's `thumbnail` default), at 46.9 vs 52.9 dB PSNR against a
    #: full-size Lanczos shrink -- both well above the ~40 dB where a difference starts to be visible.
    draft_gap: float = setting(
        1.0,
        help="Decode JPEGs at 1/2..1/8 scale while still this many times the final size (0: full size).",
        flag="--draft-gap",
    )
    optimize: bool = setting(
        False,
        help="Huffman-optimise the JPEGs: ~5% smaller files for ~10% more encode time.",
        flag="--optimize/--no-optimize",
    )
    #: Shrink filter after the DCT-domain reduction. Measured on 2-12 MP photos (CPU ms per image including
    #: MD5, decode and encode / PSNR against a full-size Lanczos shrink): bilinear 38.7 ms / 46.4 dB,
    #: bicubic (Pillow's `thumbnail`) 44.8 ms / 46.9 dB, box (OpenCV's INTER_AREA, img2dataset's) 35.9 ms /
    #: 42.2 dB. Bilinear is the default: 14% faster than bicubic for a difference no one can see.
    resample: str = setting(
        "bilinear",
        help="Shrink filter: bilinear, bicubic (as Pillow's thumbnail; 14% slower, same look), box (7% faster, "
        "softer), lanczos.",
        flag="--resample",
        choices=RESAMPLE_FILTERS,
    )

    def __post_init__(self) -> None:
        # A nonsense value would not fail: it would record every row as a failure (poisoning the ledger).
        at_least(self, 1, "max_side")
        within(self, 1, 100, "quality")
        above(self, 0, "max_pixels")
        at_least(self, 0, "draft_gap")
        if self.resample not in RESAMPLE_FILTERS:
            raise SettingError(f"unknown resample filter {self.resample!r}: use one of {', '.join(RESAMPLE_FILTERS)}")


#: Millions of small images from a few Flickr farms, where a failure is one ledger row that
#: `--retry-failed` can redo later: a dead host must cost seconds, not minutes (shorter connect and read
#: timeouts, a deadline per attempt so a slow trickle ends too, fewer attempts), while a throttled farm
#: (429) gets longer backoffs.
FETCH_TRANSFER = TransferSettings(
    connect_timeout_s=15.0, read_timeout_s=30.0, deadline_s=120.0, attempts=4, max_backoff_s=60.0
)


@dataclass(frozen=True)
class HttpSettings:
    """How originals are requested, besides the transfer settings every stage shares."""

    concurrency: int = setting(64, help="Downloads in flight per worker process.", flag="--concurrency")
    #: Flickr farms are few hosts: this is what keeps them from rate-limiting us.
    per_host: int = setting(16, help="Of which at most this many to one host.", flag="--per-host")
    #: Refused early by Content-Length when the server sends one.
    max_bytes: int = setting(
        128 << 20, help="Largest response accepted, in MiB (bigger ones: too_large).", flag="--max-mb", scale=1 << 20
    )
    max_redirects: int = setting(5, help="Redirects followed per URL.", flag="--max-redirects")
    #: A redirect whose target path contains one of these is Flickr's "photo unavailable" card.
    placeholder_markers: tuple[str, ...] = setting(
        ("photo_unavailable",),
        help="A redirect whose target path contains this (repeatable) is Flickr's 'photo unavailable' card.",
        flag="--placeholder-marker",
    )
    #: Bodies are spooled: up to this many bytes in RAM, the rest in an unlinked temp file. 64 downloads in
    #: flight then hold at most 64 x 8 MiB in RAM, whatever the servers send (held whole, each could take up to 128 MiB).
    spool_above: int = setting(
        8 << 20,
        help="Keep at most this much of a body in RAM, in MiB; the rest spills to a temp file.",
        flag="--spool-mb",
        scale=1 << 20,
    )
    user_agent: str = setting(
        "oiv4/0.1 (+https://github.com/oiv4; OpenImages V4 builder)", help="User-Agent sent.", flag="--user-agent"
    )

    def __post_init__(self) -> None:
        # max_bytes 0 would record every row as `too_large`.
        at_least(self, 1, "concurrency", "per_host")
        above(self, 0, "max_bytes")
        at_least(self, 0, "max_redirects", "spool_above")


@dataclass(frozen=True)
class FetchSettings:
    """Everything the fetch stage needs, besides the root and the plan.

    `retry_failed`: None re-runs nothing finished; `("all",)` retries every recorded failure; otherwise
    the listed outcomes only (e.g. `("http_429", "timeout")`). `disk_full`/`write_error` rows are always retried,
    and `blocked_address` rows are whenever `transfer.allow_private_networks` admits what blocked them.
    """

    layout: str = setting(
        "folder",
        help="folder: <set>/images/<id[:2]>/<id>.jpg (the notebook's); zip: one <set>/images/<set>_NNNNN.zip per "
        "shard; webdataset: one <set>/webdataset/<set>-NNNNN.tar per shard (<id>.jpg + <id>.json).",
        flag="--layout",
        choices=LAYOUTS,
    )
    transform: TransformSettings = field(default_factory=TransformSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    transfer: TransferSettings = group(
        FETCH_TRANSFER,
        unused={
            name: "images come whole in one request, never in ranged parts"
            for name in ("part_size", "connections", "checkpoint_s")
        },
    )
    #: Pillow releases the GIL, so threads do scale here.
    cpu_threads: int = setting(2, help="Decode/shrink/encode threads per worker process.", flag="--cpu-threads")
    retry_failed: tuple[str, ...] | None = setting(
        None,
        help='Outcomes to fetch again ("all": every recorded failure).',
        cli=False,
        why="spelled `oiv4 fetch --retry-failed [OUTCOME]...`: the outcomes are arguments",
    )
    fallback_thumbnail: bool = setting(
        False,
        help="When the original is gone (placeholder/403/404/410), store Thumbnail300KURL instead. It cannot be "
        "MD5-verified: the ledger says source=thumbnail.",
        flag="--fallback-thumbnail/--no-fallback-thumbnail",
    )
    #: The ledger part cadence bounds the work a kill can lose and drives live progress.
    flush_seconds: float = setting(2.0, help="Seconds between two ledger parts of a shard.", flag="--flush-seconds")
    flush_rows: int = setting(2000, help="Rows that force a ledger part sooner.", flag="--flush-rows")
    #: Stop a shard cleanly when the root's filesystem has less free space than this (local roots only);
    #: ENOSPC is still handled if the disk fills faster. 0 disables the check.
    min_free_bytes: int = setting(
        256 << 20,
        help="Stop cleanly when the root has less free space than this, in MiB.",
        flag="--min-free-mb",
        scale=1 << 20,
    )
    #: Decoded pixels in flight per worker, across its decode threads: `cpu_threads` decodes of ~196 MP PNGs
    #: (784 MB of RGBA each) would otherwise reach several GB (seen: 6.6 GB RSS). A decode larger than the whole
    #: budget runs alone. Charged at the header's full size (io.memory_budget.decoded_bytes), before decoding.
    decode_budget_bytes: int = setting(
        1024 << 20,
        help="Decoded pixels in flight per worker, in MiB (4 bytes per declared pixel); bigger decodes run alone.",
        flag="--decode-budget-mb",
        scale=1 << 20,
    )
    force_settings: bool = setting(
        False,
        help="Resume shards started with other output settings (size, quality, rotation, layout...) anyway; "
        "the override is recorded.",
        flag="--force-settings/--no-force-settings",
    )

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise SettingError(f"unknown layout {self.layout!r}: use one of {', '.join(LAYOUTS)}")
        at_least(self, 1, "cpu_threads", "flush_rows")
        above(self, 0, "flush_seconds")
        at_least(self, 0, "min_free_bytes")
        at_least(self, 1, "decode_budget_bytes")
        if self.retry_failed is not None:
            object.__setattr__(self, "retry_failed", tuple(self.retry_failed))

    def output_settings(self) -> dict[str, str | int | float | bool | None]:
        """The settings that shape the stored bytes, recorded with each shard (a resume must not change them)."""
        t = self.transform
        return {
            "layout": self.layout,
            "max_side": t.max_side,
            "quality": t.quality,
            "rotate": t.rotate,
            "resample": t.resample,
            "draft_gap": t.draft_gap,
            "optimize": t.optimize,
        }

    def retried(self, outcome: str, reason: str | None = None) -> bool:
        """True when a row recorded with `outcome` (and `reason`) must be fetched again by this run."""
        if outcome in ALWAYS_RETRIED:
            return True
        if outcome == Outcome.blocked_address and self.transfer.allow_private_networks:
            # Recorded by a run that refused private addresses: the row never had its chance.
            return STILL_BLOCKED_REASON not in (reason or "")
        if outcome == Outcome.ok or self.retry_failed is None:
            return False
        return "all" in self.retry_failed or outcome in self.retry_failed
