"""`FeaturesSettings`: how `oiv4 features` runs, and which of its settings shape the vectors."""

from __future__ import annotations

from dataclasses import dataclass

from oiv4.contracts.layout import LAYOUT
from oiv4.contracts.limits import at_least
from oiv4.contracts.schema import ImageSet
from oiv4.contracts.setting import setting
from oiv4.contracts.shards import SettingValue
from oiv4.contracts.vectors import DEFAULT_DTYPE, DEFAULT_MODEL, VECTOR_DTYPES
from oiv4.stages.features.models import MODELS


@dataclass(frozen=True)
class FeaturesSettings:
    """How `oiv4 features` works through a set."""

    model: str = setting(
        DEFAULT_MODEL,
        help=f"Feature model: {', '.join(MODELS)}. Adding one is one entry in stages/features/models.py.",
        flag="--model",
    )
    weights: str | None = setting(
        None,
        help="Weights file (a torch state_dict as published; clip-vit-b-32: an open_clip checkpoint such as the "
        "hub's open_clip_model.safetensors). For machines without internet.",
        flag="--weights",
        default_text="the torch hub cache (clip-vit-b-32: the Hugging Face cache), downloaded on first use",
    )
    device: str = setting(
        "auto",
        help="auto: a CUDA GPU when there is one, else the CPU.",
        flag="--device",
        choices=("auto", "cpu", "cuda"),
    )
    batch_size: int = setting(
        32, help="Images per forward pass (and per ledger part: a kill loses at most one batch).", flag="--batch-size"
    )
    dtype: str = setting(
        DEFAULT_DTYPE,
        help="Stored vector precision (float16 halves the disk).",
        flag="--dtype",
        choices=tuple(VECTOR_DTYPES),
    )
    loader_workers: int | None = setting(
        None,
        help="DataLoader processes decoding images for each shard (0: decode in the shard's own process).",
        flag="--loader-workers",
        default_text="1 on the CPU, up to 8 on a GPU",
    )
    force_settings: bool = setting(
        False,
        help="Resume shards recorded with another model, weights, preprocessing or dtype (recorded).",
        flag="--force-settings/--no-force-settings",
    )
    weights_path: str = setting("", cli=False, help="Resolved weights file.", why="resolved when the run starts")
    weights_sha256: str = setting("", cli=False, help="SHA-256 of the weights.", why="computed when the run starts")
    #: The shard's stored images, (row, image_id, location) by row: the stage fills it per task.
    todo: tuple[tuple[int, str, str], ...] = setting(
        (), cli=False, help="The shard's stored images.", why="set per shard by the stage, not the user"
    )

    def __post_init__(self) -> None:
        at_least(self, 1, "batch_size")
        at_least(self, 0, "loader_workers")

    def output_settings(self) -> dict[str, SettingValue]:
        """What shapes the vectors: refused on resume when changed, unless --force-settings."""
        spec = MODELS[self.model]
        return {
            "model": self.model,
            "dim": spec.dim,
            "weights_sha256": self.weights_sha256,
            "preprocessing": spec.preprocess.describe(),
            "dtype": self.dtype,
        }

    def settings_record(self, image_set: ImageSet | str, shard: int) -> str:
        """Where a shard's settings record lives: per model, beside the vectors (not the set's fetch ledger)."""
        return LAYOUT.features_settings(self.model, image_set, shard)
