"""Where everything lives under a root. The seed notebook's layout is the default, so readers written
for it keep working; every path an ImageID touches goes through `image_relpath`, which refuses
anything that is not a 16-hex ID, so hostile IDs can never become paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from oiv4.contracts.errors import HostileIdError, InputError
from oiv4.contracts.schema import ImageSet, is_valid_image_id

METADATA_FILES: dict[str, str] = {
    # local file name -> path relative to the metadata base URL (release 2018_04)
    "image_ids_and_rotation.csv": "image_ids_and_rotation.csv",
    "train-images-boxable-with-rotation.csv": "train/train-images-boxable-with-rotation.csv",
}
FULL_CSV = "image_ids_and_rotation.csv"
BOXABLE_CSV = "train-images-boxable-with-rotation.csv"


#: The kinds of ledger file under `ledger/<set>/`, each naming its set (a damaged file's advice depends on both).
LEDGER_SHARD_FILE = re.compile(r"^ledger/(?P<set>[a-z_]+)/shard-\d+\.parquet$")
LEDGER_PART_FILE = re.compile(r"^ledger/(?P<set>[a-z_]+)/shard-\d+\.parts/[^/]+$")
LEDGER_SETTINGS_FILE = re.compile(r"^ledger/(?P<set>[a-z_]+)/shard-\d+\.settings\.json$")

#: A features metadata file's name, `metadata_NNNNN.parquet` (clip-retrieval's naming).
_FEATURES_METADATA = re.compile(r"/metadata/metadata_(\d+)\.parquet$")
#: A feature model's name as it appears in paths: lowercase letters, digits and dashes (e.g. `vgg16-fc2`).
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def check_image_id(image_id: str) -> str:
    if not is_valid_image_id(image_id):
        raise HostileIdError(f"refusing ImageID {image_id!r}: not 16 lowercase hex characters")
    return image_id


def check_model_name(model: str) -> str:
    """A feature model's name, refused unless it is safe as one path component."""
    if not _MODEL_NAME.fullmatch(model):
        raise InputError(f"refusing model name {model!r}: lowercase letters, digits and '-' only")
    return model


@dataclass(frozen=True)
class Layout:
    """Relative paths (POSIX, '/'-separated) of every artefact under a root.

    Relative so that the same layout serves a local folder, a shared mount or `s3://bucket/prefix`.
    """

    def metadata(self, name: str) -> str:
        return f"metadata/{name}"

    def plan(self, image_set: ImageSet | str) -> str:
        return f"plan/{ImageSet(image_set).value}.parquet"

    def plan_dir(self) -> str:
        return "plan"

    def plan_summary(self) -> str:
        return f"{self.plan_dir()}/summary.json"

    def plan_rejected(self) -> str:
        """The rows `oiv4 plan --skip-invalid` left out, with why."""
        return f"{self.plan_dir()}/rejected.parquet"

    def image(self, image_set: ImageSet | str, image_id: str) -> str:
        """The seed layout: `<set>/images/<id[:2]>/<id>.jpg`."""
        check_image_id(image_id)
        return f"{ImageSet(image_set).value}/images/{image_id[:2]}/{image_id}.jpg"

    def images_dir(self, image_set: ImageSet | str) -> str:
        return f"{ImageSet(image_set).value}/images"

    # A zip or webdataset shard stages each finished image as its own file until the shard packs its archive.

    def staging_root(self, image_set: ImageSet | str) -> str:
        return f"{ImageSet(image_set).value}/staging"

    def staging_dir(self, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.staging_root(image_set)}/shard-{int(shard):05d}"

    def staged_image(self, image_set: ImageSet | str, shard: int, image_id: str) -> str:
        return f"{self.staging_dir(image_set, shard)}/{check_image_id(image_id)}.jpg"

    def shard_zip(self, image_set: ImageSet | str, shard: int) -> str:
        s = ImageSet(image_set).value
        return f"{s}/images/{s}_{shard:05d}.zip"

    def webdataset_dir(self, image_set: ImageSet | str) -> str:
        return f"{ImageSet(image_set).value}/webdataset"

    def shard_tar(self, image_set: ImageSet | str, shard: int) -> str:
        s = ImageSet(image_set).value
        return f"{self.webdataset_dir(s)}/{s}-{shard:05d}.tar"

    def archive_zip(self, image_set: ImageSet | str, archive_stem: str) -> str:
        """targets/images/train_<x>.zip and validation/images/validation.zip, as the notebook made them."""
        return f"{ImageSet(image_set).value}/images/{archive_stem}.zip"

    def archive_tar(self, image_set: ImageSet | str, archive_stem: str) -> str:
        return f"{ImageSet(image_set).value}/images/{archive_stem}.tar.gz"

    def ledger_dir(self, image_set: ImageSet | str) -> str:
        return f"ledger/{ImageSet(image_set).value}"

    def ledger_shard(self, image_set: ImageSet | str, shard: int) -> str:
        return self.folder_shard_file(self.ledger_dir(image_set), shard)

    def ledger_parts_dir(self, image_set: ImageSet | str, shard: int) -> str:
        return self.folder_shard_parts_dir(self.ledger_dir(image_set), shard)

    def ledger_part(self, image_set: ImageSet | str, shard: int, name: str) -> str:
        """One part of a running shard; `name` orders the parts (they are read in name order)."""
        return self.folder_part(self.ledger_dir(image_set), shard, name)

    def ledger_settings(self, image_set: ImageSet | str, shard: int) -> str:
        """The output settings a shard was started with (`run/shard_settings.py`)."""
        return f"{self.ledger_dir(image_set)}/shard-{shard:05d}.settings.json"

    # A ledger folder's shards (`ledger_dir`, or a features ledger's `features_ledger_dir`) and its glob patterns.

    def folder_shard_file(self, ledger_dir: str, shard: int) -> str:
        return f"{ledger_dir}/shard-{shard:05d}.parquet"

    def folder_shard_parts_dir(self, ledger_dir: str, shard: int) -> str:
        return f"{ledger_dir}/shard-{shard:05d}.parts"

    def folder_part(self, ledger_dir: str, shard: int, name: str) -> str:
        return f"{self.folder_shard_parts_dir(ledger_dir, shard)}/part-{name}.parquet"

    def shard_files_glob(self, ledger_dir: str) -> str:
        return f"{ledger_dir}/shard-*.parquet"

    def part_files_glob(self, ledger_dir: str) -> str:
        return f"{ledger_dir}/shard-*.parts/part-*.parquet"

    def shard_parts_glob(self, parts_dir: str) -> str:
        return f"{parts_dir}/part-*.parquet"

    def anything_glob(self, ledger_dir: str) -> str:
        """Shard files, parts folders and settings records alike."""
        return f"{ledger_dir}/shard-*"

    def settings_files_glob(self, ledger_dir: str) -> str:
        return f"{ledger_dir}/shard-*.settings.json"

    def shard_of(self, rel: str) -> int:
        """The shard a ledger file or part belongs to: `.../shard-00012.parquet`, `.../shard-00012.parts/part-...`."""
        return int(rel.rsplit("/shard-", 1)[1].split(".", 1)[0])

    def dedup_dir(self) -> str:
        return "dedup"

    def dedup_pairs(self) -> str:
        return f"{self.dedup_dir()}/pairs.parquet"

    def dedup_summary(self) -> str:
        return f"{self.dedup_dir()}/summary.json"

    def report_dir(self) -> str:
        return "report"

    # Image features (`oiv4 features`) and exact nearest-neighbour ground truth (`oiv4 neighbors`). The
    # features of one set are one `.npy` (N x d) + one metadata Parquet (`image_id`, `row`, same order) per
    # shard, named as clip-retrieval names them, so embedding-reader reads `features_dir` as it is.

    def features_dir(self, model: str, image_set: ImageSet | str) -> str:
        return f"features/{check_model_name(model)}/{ImageSet(image_set).value}"

    def features_npy_glob(self, model: str, image_set: ImageSet | str) -> str:
        return f"{self.features_dir(model, image_set)}/img_emb/img_emb_*.npy"

    def features_metadata_glob(self, model: str, image_set: ImageSet | str) -> str:
        return f"{self.features_dir(model, image_set)}/metadata/metadata_*.parquet"

    def features_metadata_shard(self, rel: str) -> int | None:
        """The shard of a `features_metadata` path (None: not one)."""
        m = _FEATURES_METADATA.search(rel)
        return int(m.group(1)) if m else None

    def features_npy(self, model: str, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.features_dir(model, image_set)}/img_emb/img_emb_{shard:05d}.npy"

    def features_metadata(self, model: str, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.features_dir(model, image_set)}/metadata/metadata_{shard:05d}.parquet"

    # The write side's own bookkeeping beside the pairs (embedding-reader reads only img_emb/ and metadata/):
    # the per-shard settings record, the features ledger (one row per stored image of the shard: a vector
    # or why not), the checksums of a finished pair, and the batches of a shard still running.

    def features_settings(self, model: str, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.features_dir(model, image_set)}/settings/shard-{shard:05d}.json"

    def features_ledger_dir(self, model: str, image_set: ImageSet | str) -> str:
        return f"{self.features_dir(model, image_set)}/ledger"

    def features_ledger_shard(self, model: str, image_set: ImageSet | str, shard: int) -> str:
        return self.folder_shard_file(self.features_ledger_dir(model, image_set), shard)

    def features_ledger_parts_dir(self, model: str, image_set: ImageSet | str, shard: int) -> str:
        return self.folder_shard_parts_dir(self.features_ledger_dir(model, image_set), shard)

    def features_checksums(self, model: str, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.features_dir(model, image_set)}/checksums/shard-{shard:05d}.json"

    def features_checksums_glob(self, model: str, image_set: ImageSet | str) -> str:
        return f"{self.features_dir(model, image_set)}/checksums/shard-*.json"

    def features_ledger_dirs_glob(self, image_set: ImageSet | str) -> str:
        """The features ledger folder of every model for a set (`features_model` names each one's model)."""
        return f"features/*/{ImageSet(image_set).value}/ledger"

    def features_model(self, rel: str) -> str:
        """The model a path under `features/` belongs to."""
        return rel.split("/")[1]

    def features_work_dir(self, model: str, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.features_dir(model, image_set)}/work/shard-{shard:05d}"

    def neighbors_dir(self, model: str) -> str:
        return f"neighbors/{check_model_name(model)}"

    def neighbors_file(self, model: str, name: str) -> str:
        """`<queries>-<database>.parquet` of one model's ground truth."""
        return f"{self.neighbors_dir(model)}/{name}.parquet"

    def neighbors_files_glob(self, model: str | None = None) -> str:
        """Every ground-truth file of `model`, or of every model."""
        return f"{self.neighbors_dir(model) if model else 'neighbors/*'}/*.parquet"

    def neighbors_parts_dir(self, model: str, name: str) -> str:
        """Query blocks of a ground truth still being computed, and the settings they were computed with."""
        return f"{self.neighbors_dir(model)}/{name}.parts"

    def neighbors_parts_glob(self, model: str, name: str) -> str:
        return f"{self.neighbors_parts_dir(model, name)}/part-*.parquet"

    def neighbors_part(self, model: str, name: str, block: int) -> str:
        return f"{self.neighbors_parts_dir(model, name)}/part-{block:05d}.parquet"

    def neighbors_parts_settings(self, model: str, name: str) -> str:
        return f"{self.neighbors_parts_dir(model, name)}/settings.json"


LAYOUT = Layout()
