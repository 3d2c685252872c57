"""A local, deterministic mini OpenImages V4 served over HTTP: what tests, the demo and benchmarks fetch.

The universe
------------
`UniverseSpec(seed=0, n_images=300, megapixels=(0.5, 2.0), ...)` fixes everything; the same spec always
gives byte-identical CSVs, images and archives, another seed gives other ones. Of the `n_images` rows,
`validation_fraction` are `validation`, `test_fraction` are `test` and the rest `train`; `boxable_fraction`
of the train rows also appear in the boxable CSV (the **targets** set, served as CVDF archives), and the
remaining train rows are the **URL sets** (train / extended_targets), fetched from their OriginalURL.

Both metadata CSVs use the real 12-column schema (`oiv4.contracts.schema.COLUMNS`) and quoting: ImageIDs are 16
lowercase hex characters in no particular order, titles and authors contain commas, double quotes and
non-ASCII text, `OriginalSize` / `OriginalMD5` (base64 of the MD5 digest) describe the exact bytes served
at `OriginalURL` (a URL on the mirror, rendered with the base URL the client used), `Thumbnail300KURL` is
a ~300K-pixel copy on the mirror or empty (`missing_thumbnail_fraction`), and `Rotation` is `0.0`, a
non-zero angle (`rotated_fraction`: the image is stored turned, and rotating it counter-clockwise by
`Rotation` brings its red top-left marker back to the top-left) or empty (`nan_rotation_fraction`).
The boxable CSV lists its rows in its own order.

Originals are photo-like (smooth colour field, shapes, texture, noise: never flat), `megapixels` in size,
mostly JPEG; `special_kind_fraction` of them are RGB PNG, palette PNG, RGBA PNG with real alpha, GIF, CMYK
JPEG or 16-bit greyscale PNG (Pillow mode `I;16`). Pixels are rendered lazily in threads and cached on
disk (`cache_dir`, default `${OIV4_MIRROR_CACHE:-<tmp>}/oiv4-mirror-<hash of spec>`); CSVs need every
original's size and MD5, so the first CSV request renders them all.

CVDF archives: `tar/train_<x>.tar.gz` for each hex digit `x` with boxable images (members
`train_<x>/<id>.jpg`) and `tar/validation.tar.gz` (`validation/<id>.jpg`), each image a JPEG of at most
`archive_max_side` (1024) px on the longest side, as in the real bucket; single images at `train/<id>.jpg`,
`validation/<id>.jpg`, `test/<id>.jpg`. `Universe.archive_names()` / `archive_bytes(name)` give the same
archives for upload to a moto S3 server. Each archive starts with its folder entry, like `tar czf` output.
Damaged archives, off by default: `archive_missing_fraction` leaves some listed images out
(`Universe.expected_archive(id)` is then `missing_from_archive`); `hostile_archive_members` adds `../`,
absolute, non-hex, symlink and hard-link members to the first train archive
(`Universe.hostile_archive_members()`); `corrupt_archives=("train_3",)` inserts an invalid deflate block
half-way (`Universe.corrupt_offset(name)` is its byte offset; `gzip -t` says "format violated").

Misbehaviours
-------------
`misbehaviour_fraction` (default 15%) of URL-set rows misbehave, assigned round-robin over
`misbehaviours` (all kinds below by default; repeat a name to weight it). `Universe.expected(id)` is the
outcome (`oiv4.contracts.schema.Outcome` value) a correct fetcher records for the original; all other rows are `ok`.

| misbehaviour | what the OriginalURL does | expected |
|---|---|---|
| `placeholder` | 302 to `/pw/images/en-us/photo_unavailable[_l].png`, served with 200 (MD5 cannot match) | `placeholder` |
| `forbidden` / `not_found` / `gone` | 403 / 404 / 410 (private or deleted photo) | `http_403` / `http_404` / `http_410` |
| `rate_limited` | 429 with `Retry-After: retry_after` for the first `transient_failures` requests, then 200 | `ok` |
| `unavailable` | 503 with `Retry-After`, likewise, then 200 | `ok` |
| `server_error` | 500, always | `http_5xx` |
| `truncated` | Content-Length of the whole body, half of it sent, connection closed | `truncated` |
| `slow_timeout` | the body trickled over `trickle_seconds` (default 20 s) | `timeout` |
| `slow_ok` | waits `slow_ok_seconds` (0.3 s), then serves normally | `ok` |
| `wrong_content_type` | `text/html` page with 200; the CSV's size and MD5 describe that page, so only decoding catches it | `not_image` |
| `md5_mismatch` | a good image, but the CSV's OriginalMD5 is of other bytes | `md5_mismatch` |
| `decompression_bomb` | a ~100 KB 1-bit PNG declaring 30000x30000 pixels; size and MD5 match | `decompression_bomb` |
| `corrupt_jpeg` | a JPEG with 2,000 zeroed bytes mid-scan (Pillow decodes it "fine", partly grey); size and MD5 match | `corrupt_jpeg` |

Removed or private photos (`placeholder`, 403, 404, 410) answer the same way at their thumbnail URL;
other rows' thumbnails are served normally. Request counts (for 429/503-then-200) are per server
instance. `timeout` assumes a client total deadline below `trickle_seconds`. For benchmarks,
`latency_seconds` delays every image answer and `bytes_per_second` caps each image response's bandwidth
(both off by default; like the other timing fields they change no byte and are not in the cache key).

Running it
----------
- `start_mirror(spec, host="127.0.0.1", port=0, cache_dir=None)`: a `MirrorHandle` (context manager) serving
  from a background thread, with `.base_url`, `.metadata_base_url` (`{base}/openimages/2018_04/`),
  `.archives_base_url` (`{base}/tar/`), `.universe` and `.stop()`.
- `MirrorProcess(spec, ...)`: the same API, the server in its own process (benchmarks).
- `oiv4 mirror --seed 0 --images 3000 --megapixels 2 12 --port 8000`: serve until Ctrl-C.
"""

from __future__ import annotations

from oiv4_mirror.images import ImageKind
from oiv4_mirror.server import MirrorHandle, MirrorProcess, make_app, start_mirror
from oiv4_mirror.universe import ALL_MISBEHAVIOURS, ImageInfo, Misbehaviour, Universe, UniverseSpec

__all__ = [
    "ALL_MISBEHAVIOURS",
    "ImageInfo",
    "ImageKind",
    "MirrorHandle",
    "MirrorProcess",
    "Misbehaviour",
    "Universe",
    "UniverseSpec",
    "make_app",
    "start_mirror",
]
