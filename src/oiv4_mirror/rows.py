"""The rows of a universe: IDs, subsets, boxable rows, misbehaviours, formats, rotations and the text of
each CSV field, all drawn from the spec's seed (numpy's generator, so equal specs give equal rows)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from oiv4_mirror.duplicates import COPY_ROTATION, HARD_NEGATIVE, UNIVERSE_COPIES, copy_size
from oiv4_mirror.images import SPECIAL_KINDS, ImageKind
from oiv4_mirror.spec import ImageInfo, Misbehaviour, UniverseSpec

_LICENSES = (
    "https://creativecommons.org/licenses/by/2.0/",
    "https://creativecommons.org/licenses/by-sa/2.0/",
    "https://creativecommons.org/licenses/by-nc/2.0/",
)
_ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)
# Titles and authors exercise CSV quoting: commas, double quotes, non-ASCII, leading dots.
_WORDS = (
    "sunset", "Café", "Straße", "東京", "Москва", "naïve", "fjörd", "...die FNF-Kerze", "garden", "beach",
    "São Paulo", "🐱", "l'été", "bridge", "night, city", 'the "best" day', "Zürich", "crème brûlée",
)  # fmt: skip
_AUTHORS = ("Michael Beat", "José Ñúñez", "Zoë O'Brien", 'Anna "Nan" Li', "山田 太郎", "Smith, John", "Ólafur")


# Kept long: every value is drawn from one seeded generator in a fixed order; one sequence makes that order
# plain, and changing it would change every universe the tests and benchmarks have cached.
def build_rows(spec: UniverseSpec) -> tuple[list[ImageInfo], list[int]]:
    """(rows in full-CSV order, a permutation of row indexes giving the boxable file's order)."""
    n = spec.n_images
    rng = np.random.default_rng([spec.seed, 1])
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        for v in rng.integers(0, 2**64, n, dtype=np.uint64).tolist():
            hid = f"{v:016x}"
            if hid not in seen and len(ids) < n:
                seen.add(hid)
                ids.append(hid)

    order = rng.permutation(n).tolist()
    n_val = round(spec.validation_fraction * n)
    n_test = round(spec.test_fraction * n)
    subsets = ["train"] * n
    for i in order[:n_val]:
        subsets[i] = "validation"
    for i in order[n_val : n_val + n_test]:
        subsets[i] = "test"
    train = [i for i in range(n) if subsets[i] == "train"]
    n_box = round(spec.boxable_fraction * len(train))
    boxable = {train[j] for j in rng.permutation(len(train))[:n_box].tolist()}
    url_rows = [i for i in train if i not in boxable]

    misbehaviour = [Misbehaviour.none] * n
    if spec.misbehaviours:
        n_bad = round(spec.misbehaviour_fraction * len(url_rows))
        for k, j in enumerate(rng.permutation(len(url_rows))[:n_bad].tolist()):
            misbehaviour[url_rows[j]] = Misbehaviour(spec.misbehaviours[k % len(spec.misbehaviours)])

    # Awkward formats go to well-behaved rows, so each one really reaches the fetcher's decoder.
    kinds = [ImageKind.jpeg] * n
    n_special = round(spec.special_kind_fraction * n)
    plain = [i for i in range(n) if misbehaviour[i] is Misbehaviour.none]
    for k, j in enumerate(rng.permutation(len(plain))[:n_special].tolist()):
        kinds[plain[j]] = SPECIAL_KINDS[k % len(SPECIAL_KINDS)]

    rotations = [0.0] * n
    n_rot = round(spec.rotated_fraction * n)
    n_nan = round(spec.nan_rotation_fraction * n)
    perm = rng.permutation(n).tolist()
    for k, i in enumerate(perm[:n_rot]):
        rotations[i] = (90.0, 180.0, 270.0)[k % 3]
    for i in perm[n_rot : n_rot + n_nan]:
        rotations[i] = math.nan
    no_thumb = set(rng.permutation(n)[: round(spec.missing_thumbnail_fraction * n)].tolist())

    roles = ["validation" if s == "validation" else "" for s in subsets]
    for i in train:
        roles[i] = "targets" if i in boxable else "url"
    planted = _plant(spec, roles, misbehaviour, kinds, rotations)
    for i, (_, variant) in planted.items():
        rotations[i] = COPY_ROTATION.get(variant, 0.0)

    lo, hi = spec.megapixels
    infos = []
    for i in range(n):
        mp = float(rng.uniform(lo, hi))
        aspect = _ASPECTS[int(rng.integers(len(_ASPECTS)))]
        width = max(8, round(math.sqrt(mp * 1e6 * aspect)))
        height = max(8, round(width / aspect))
        photo = int(rng.integers(10**9, 10**10))
        secret, secret2 = (f"{int(x):010x}" for x in rng.integers(0, 2**40, 2))
        farm, server = int(rng.integers(1, 10)), int(rng.integers(1000, 10000))
        author = _AUTHORS[int(rng.integers(len(_AUTHORS)))]
        slug = f"user{int(rng.integers(10**6)):06d}"
        words = [_WORDS[int(j)] for j in rng.integers(0, len(_WORDS), int(rng.integers(1, 4)))]
        kind, bad = kinds[i], misbehaviour[i]
        if bad is Misbehaviour.decompression_bomb:
            kind = ImageKind.png_rgb
        ext = "jpg" if bad is Misbehaviour.wrong_content_type else kind.extension
        infos.append(
            ImageInfo(
                index=i,
                image_id=ids[i],
                subset=subsets[i],
                boxable=i in boxable,
                misbehaviour=bad,
                kind=kind,
                width=width,
                height=height,
                rotation=rotations[i],
                original_path=f"/farm{farm}/{server}/{photo}_{secret}_o.{ext}",
                thumbnail_path="" if i in no_thumb else f"/c1/{farm}/{server}/{photo}_{secret2}_z.jpg",
                landing_url=f"https://www.flickr.com/photos/{slug}/{photo}",
                license=_LICENSES[int(rng.integers(len(_LICENSES)))],
                author_profile_url=f"https://www.flickr.com/people/{slug}/",
                author=author,
                title=" ".join(words),
            )
        )
    for i, (src, variant) in planted.items():  # a copy's size follows its source's (drawn above or below it)
        width, height = copy_size(variant, infos[src].width, infos[src].height)
        infos[i] = replace(infos[i], width=width, height=height, copy_of=ids[src], variant=variant)
    # The boxable file has its own order (neither sorted nor the full file's): this permutation.
    return infos, rng.permutation(n).tolist()


#: (role of the copy, role of its source), round-robin: across sets first (a train copy of a held-out image is
#: what dedup exists to catch), then within sets.
_COPY_ROLES = (
    ("url", "targets"),
    ("url", "validation"),
    ("targets", "validation"),
    ("url", "url"),
    ("targets", "targets"),
    ("validation", "url"),
)
_NEGATIVE_ROLES = (("url", "targets"), ("url", "validation"), ("targets", "url"))


def _plant(
    spec: UniverseSpec, roles: list[str], misbehaviour: list[Misbehaviour], kinds: list[ImageKind], rot: list[float]
) -> dict[int, tuple[int, str]]:
    """{row index: (source row index, variant)} for the planted copies and hard negatives.

    Only plain rows take part (well-behaved, JPEG, Rotation 0, never another planted row's source), so every
    planted image reaches dedup and the rows' other misbehaviours keep their counts. Drawn from a generator of
    its own, so a universe without planting has exactly the rows it had before.
    """
    n = len(roles)
    n_copies, n_negatives = round(spec.duplicate_fraction * n), round(spec.hard_negative_fraction * n)
    if not n_copies + n_negatives:
        return {}
    rng = np.random.default_rng([spec.seed, 3])
    free: dict[str, list[int]] = {}
    for i in rng.permutation(n).tolist():
        if roles[i] and misbehaviour[i] is Misbehaviour.none and kinds[i] is ImageKind.jpeg and rot[i] == 0.0:
            free.setdefault(roles[i], []).append(i)
    planted: dict[int, tuple[int, str]] = {}
    jobs = [(_COPY_ROLES[k % len(_COPY_ROLES)], UNIVERSE_COPIES[k % len(UNIVERSE_COPIES)]) for k in range(n_copies)]
    jobs += [(_NEGATIVE_ROLES[k % len(_NEGATIVE_ROLES)], HARD_NEGATIVE) for k in range(n_negatives)]
    for (copy_role, source_role), variant in jobs:
        if len(free.get(copy_role, ())) < 1 + (copy_role == source_role) or not free.get(source_role):
            continue  # a small universe runs out of plain rows of a role: plant fewer
        planted[free[copy_role].pop()] = (free[source_role].pop(), variant)
    return planted
