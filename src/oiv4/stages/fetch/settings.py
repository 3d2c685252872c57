"""Settings of the URL-set fetch stage: one frozen, picklable dataclass that travels with each shard."""

from __future__ import annotations

from dataclasses import dataclass, field

from oiv4.contracts.schema import Outcome

LAYOUTS: tuple[str, ...] = ("folder", "zip", "webdataset")
RESAMPLE_FILTERS: tuple[str, ...] = ("bicubic", "bilinear", "box", "lanczos")

#: Outcomes that say nothing about the image (the machine ran out of disk, a write failed): a later run
#: retries them without being asked, because the row never really had its chance.
ALWAYS_RETRIED: frozenset[str] = frozenset({Outcome.disk_full.value, Outcome.write_error.value})

#: Original gone for good: the only outcomes for which `fallback_thumbnail` tries Thumbnail300KURL.
GONE_OUTCOMES: frozenset[str] = frozenset(
    {Outcome.placeholder.value, Outcome.http_403.value, Outcome.http_404.value, Outcome.http_410.value}
)


@dataclass(frozen=True)
class TransformSettings:
    """How a verified original becomes the stored JPEG."""

    max_side: int = 1024  # shrink to fit max_side x max_side, aspect kept, never enlarged
    quality: int = 90
    rotate: bool = True  # apply the CSV Rotation (counter-clockwise degrees); False reproduces the notebook
    #: Refuse images above this many pixels *before* decoding. Real originals reach ~96 MP, so 200 MP keeps
    #: every real photo and still refuses bombs (a 30000x30000 PNG is 900 MP). Set explicitly because
    #: Pillow's own global default (~179 MP hard limit) would both refuse real photos near it and is global.
    max_pixels: int = 200_000_000
    #: JPEGs are decoded at 1/2, 1/4 or 1/8 scale straight from the DCT (`Image.draft`) while still at least
    #: `draft_gap` times the final size; 0 decodes at full size. Measured on 2-12 MP photos: 1.0 takes half
    #: the decode+shrink time of 2.0 (Pillow's `thumbnail` default), at 46.9 vs 52.9 dB PSNR against a
    #: full-size Lanczos shrink -- both well above the ~40 dB where a difference starts to be visible.
    draft_gap: float = 1.0
    optimize: bool = False  # Huffman optimisation: ~5% smaller files for ~10% more encode time
    #: Shrink filter after the DCT-domain reduction. Measured on 2-12 MP photos (CPU ms per image including
    #: MD5, decode and encode / PSNR against a full-size Lanczos shrink): bilinear 38.7 ms / 46.4 dB,
    #: bicubic (Pillow's `thumbnail`) 44.8 ms / 46.9 dB, box (OpenCV's INTER_AREA, img2dataset's) 35.9 ms /
    #: 42.2 dB. Bilinear is the default: 14% faster than bicubic for a difference no one can see.
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"unknown resample filter {self.resample!r}: use one of {', '.join(RESAMPLE_FILTERS)}")


@dataclass(frozen=True)
class HttpSettings:
    """How originals are downloaded. Timeouts in seconds."""

    concurrency: int = 64  # downloads in flight per worker process
    per_host: int = 16  # of which at most this many to one host (Flickr farms are few hosts)
    connect_timeout: float = 15.0
    read_timeout: float = 30.0  # longest silence between two reads
    #: Total deadline of one attempt, from the request to the last byte. A slow trickle that never goes
    #: silent for `read_timeout` still ends here (outcome `timeout`).
    deadline: float = 120.0
    attempts: int = 4  # per URL, for retryable failures (429, 5xx, resets, timeouts, cut bodies)
    backoff_base: float = 1.0  # exponential backoff: base * 2**(attempt-1) * jitter(0.5..1.5)
    backoff_max: float = 60.0
    retry_after_max: float = 120.0  # never wait longer than this on one Retry-After
    max_bytes: int = 128 << 20  # per response; larger bodies end as `too_large` (refused early by Content-Length)
    max_redirects: int = 5
    #: A redirect whose target path contains one of these is Flickr's "photo unavailable" card.
    placeholder_markers: tuple[str, ...] = ("photo_unavailable",)
    user_agent: str = "oiv4/0.1 (+https://github.com/oiv4; OpenImages V4 builder)"


@dataclass(frozen=True)
class FetchSettings:
    """Everything the fetch stage needs, besides the root and the plan.

    `retry_failed`: None re-runs nothing finished; `("all",)` retries every recorded failure; otherwise
    the listed outcomes only (e.g. `("http_429", "timeout")`). `disk_full`/`write_error` rows are always retried.
    """

    layout: str = "folder"  # folder (the notebook's <set>/images/<id[:2]>/<id>.jpg), zip, webdataset
    transform: TransformSettings = field(default_factory=TransformSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    cpu_threads: int = 2  # decode/shrink/encode threads per worker process (Pillow releases the GIL)
    retry_failed: tuple[str, ...] | None = None
    fallback_thumbnail: bool = False  # store Thumbnail300KURL (unverifiable) when the original is gone
    flush_seconds: float = 2.0  # ledger part cadence: bounds the work a kill can lose and drives live progress
    flush_rows: int = 2000
    #: Stop a shard cleanly when the root's filesystem has less free space than this (local roots only);
    #: ENOSPC is still handled if the disk fills faster. 0 disables the check.
    min_free_bytes: int = 256 << 20
    #: Resume shards started with other output settings (see `output_settings`); the override is recorded.
    force_settings: bool = False

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}: use one of {', '.join(LAYOUTS)}")
        if self.transform.max_side < 1 or not 1 <= self.transform.quality <= 100:
            raise ValueError("max_side must be >= 1 and quality within 1..100")
        if self.http.attempts < 1 or self.http.concurrency < 1 or self.http.per_host < 1:
            raise ValueError("attempts, concurrency and per_host must be >= 1")
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

    def retried(self, outcome: str) -> bool:
        """True when a row recorded with `outcome` must be fetched again by this run."""
        if outcome in ALWAYS_RETRIED:
            return True
        if outcome == Outcome.ok or self.retry_failed is None:
            return False
        return "all" in self.retry_failed or outcome in self.retry_failed
