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

    def plan_summary(self) -> str:
        return "plan/summary.json"

    def image(self, image_set: ImageSet | str, image_id: str) -> str:
        """The seed layout: `<set>/images/<id[:2]>/<id>.jpg`."""
        check_image_id(image_id)
        return f"{ImageSet(image_set).value}/images/{image_id[:2]}/{image_id}.jpg"

    def images_dir(self, image_set: ImageSet | str) -> str:
        return f"{ImageSet(image_set).value}/images"

    def shard_zip(self, image_set: ImageSet | str, shard: int) -> str:
        s = ImageSet(image_set).value
        return f"{s}/images/{s}_{shard:05d}.zip"

    def shard_tar(self, image_set: ImageSet | str, shard: int) -> str:
        s = ImageSet(image_set).value
        return f"{s}/webdataset/{s}-{shard:05d}.tar"

    def archive_zip(self, image_set: ImageSet | str, archive_stem: str) -> str:
        """targets/images/train_<x>.zip and validation/images/validation.zip, as the notebook made them."""
        return f"{ImageSet(image_set).value}/images/{archive_stem}.zip"

    def archive_tar(self, image_set: ImageSet | str, archive_stem: str) -> str:
        return f"{ImageSet(image_set).value}/images/{archive_stem}.tar.gz"

    def ledger_dir(self, image_set: ImageSet | str) -> str:
        return f"ledger/{ImageSet(image_set).value}"

    def ledger_shard(self, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.ledger_dir(image_set)}/shard-{shard:05d}.parquet"

    def ledger_parts_dir(self, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.ledger_dir(image_set)}/shard-{shard:05d}.parts"

    def report_dir(self) -> str:
        return "report"

    # Image features (`oiv4 features`) and exact nearest-neighbour ground truth (`oiv4 neighbors`). The
    # features of one set are one `.npy` (N x d) + one metadata Parquet (`image_id`, `row`, same order) per
    # shard, named as clip-retrieval names them, so embedding-reader reads `features_dir` as it is.

    def features_dir(self, model: str, image_set: ImageSet | str) -> str:
        return f"features/{check_model_name(model)}/{ImageSet(image_set).value}"

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
        return f"{self.features_ledger_dir(model, image_set)}/shard-{shard:05d}.parquet"

    def features_ledger_parts_dir(self, model: str, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.features_ledger_dir(model, image_set)}/shard-{shard:05d}.parts"

    def features_checksums(self, model: str, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.features_dir(model, image_set)}/checksums/shard-{shard:05d}.json"

    def features_work_dir(self, model: str, image_set: ImageSet | str, shard: int) -> str:
        return f"{self.features_dir(model, image_set)}/work/shard-{shard:05d}"

    def neighbors_dir(self, model: str) -> str:
        return f"neighbors/{check_model_name(model)}"


LAYOUT = Layout()
