"""The model registry: adding a model is one `ModelSpec` entry in `MODELS`.

A spec names the network (a factory in `nets`, or an open_clip model), its output dimension, its
preprocessing, and where its published weights come from. Weights are resolved once per run, before any
shard starts: `--weights FILE` if given, else the torch hub cache (`<torch.hub dir>/checkpoints/<file>`),
else a download into that cache; open_clip models use open_clip's own (the Hugging Face cache, downloaded
into it). Their SHA-256 is recorded with every shard, so the vectors can always be
traced to the exact weights that made them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oiv4.contracts.errors import FeaturesError, MissingExtraError
from oiv4.contracts.extras import require
from oiv4.stages.features.preprocess import CLIP, IMAGENET, TINY, Preprocess

if TYPE_CHECKING:
    from torch import nn

TORCHVISION_WEIGHTS = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class ModelSpec:
    """One registered feature model."""

    name: str
    dim: int
    preprocess: Preprocess
    description: str
    #: Where the published weights are downloaded from; None: no published weights (`--weights` required).
    weights_url: str | None = None
    #: "torch": a module from `nets` loading a `state_dict`; "open_clip": an open_clip model name.
    kind: str = "torch"
    network: str = ""

    @property
    def weights_file(self) -> str | None:
        return self.weights_url.rsplit("/", 1)[-1] if self.weights_url else None


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "vgg16-fc2",
            4096,
            IMAGENET,
            "VGG16, ImageNet weights, FC2 after its ReLU (the representation of Bee et al. 2021)",
            TORCHVISION_WEIGHTS + "vgg16-397923af.pth",
            network="VGG16FC2",
        ),
        ModelSpec(
            "resnet50",
            2048,
            IMAGENET,
            "ResNet-50, ImageNet weights (torchvision V1), global average pool",
            TORCHVISION_WEIGHTS + "resnet50-11ad3fa6.pth",
            network="ResNet50Pool",
        ),
        ModelSpec(
            "clip-vit-b-32",
            512,
            CLIP,
            "OpenAI CLIP ViT-B/32 image embedding, through open_clip (the [clip] extra)",
            kind="open_clip",
            # OpenAI trained CLIP with QuickGELU; open_clip's plain "ViT-B-32" uses GELU, which loads the same
            # weights without complaint and gives other vectors.
            network="ViT-B-32-quickgelu",
        ),
        ModelSpec(
            "tiny-cnn",
            16,
            TINY,
            "two convolutions, 64 px input: for tests and trial runs; no published weights (--weights FILE)",
            network="TinyNet",
        ),
    )
}


def model_spec(name: str) -> ModelSpec:
    """The registered model `name`; a FeaturesError lists the known ones."""
    spec = MODELS.get(name)
    if spec is None:
        raise FeaturesError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return spec


def _torch() -> Any:
    return require("torch", extra="features", feature="oiv4 features")


def _open_clip() -> Any:
    try:
        return require("open_clip", extra="clip", feature="the clip-vit-b-32 model")
    except MissingExtraError as exc:
        if exc.cause and "torchvision::" in exc.cause:
            raise FeaturesError(_torchvision_mismatch(exc.cause)) from None
        raise


def _torchvision_mismatch(cause: str) -> str:
    """open_clip imports torchvision, whose C++ operators load only next to the torch build it was made for
    (a CUDA torchvision wheel beside a CPU torch fails at import): say which pair and how to match them."""
    versions = {}
    for name in ("torch", "torchvision"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "?"
    return (
        f"the clip-vit-b-32 model cannot import open_clip: torchvision {versions['torchvision']} was not built for "
        f"torch {versions['torch']} ({cause}); install the torchvision wheel from the index this torch came from "
        f"(a CPU torch: pip install torchvision=={versions['torchvision'].split('+')[0]} "
        "--index-url https://download.pytorch.org/whl/cpu)"
    )


def require_extras(spec: ModelSpec) -> None:
    """Before any work: the extras `spec` needs are importable (MissingExtraError names the extra if not)."""
    _torch()
    if spec.kind == "open_clip":
        _open_clip()


def cache_path(spec: ModelSpec) -> Path | None:
    """Where the torch hub cache keeps `spec`'s weights (None for models without published torch weights)."""
    if spec.weights_file is None or spec.kind != "torch":
        return None
    return Path(_torch().hub.get_dir()) / "checkpoints" / spec.weights_file


def resolve_weights(spec: ModelSpec, weights: str | None) -> Path:
    """The weights file to load: `weights` if given, else the cached or freshly downloaded published file."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FeaturesError(f"--weights {weights}: no such file")
        return path.resolve()
    if spec.kind == "open_clip":
        return _open_clip_weights(spec)
    cached = cache_path(spec)
    if cached is None or spec.weights_url is None:
        raise FeaturesError(f"model {spec.name} has no published weights: pass --weights FILE (a torch state_dict)")
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        _torch().hub.download_url_to_file(spec.weights_url, str(cached), progress=False)
    except Exception as exc:  # no network, a proxy, a full disk: all end in the same advice
        raise FeaturesError(
            f"no weights for {spec.name}: downloading {spec.weights_url} failed ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]}); put that file at {cached} or pass --weights FILE"
        ) from None
    return cached


def _open_clip_weights(spec: ModelSpec) -> Path:
    open_clip = _open_clip()
    cfg = open_clip.get_pretrained_cfg(spec.network, "openai")
    source = cfg.get("hf_hub", "").rstrip("/") or cfg.get("url", "")
    try:
        # From the Hugging Face cache when it holds them, else downloaded into it (HF_HOME, HF_HUB_OFFLINE apply).
        return Path(open_clip.download_pretrained(cfg))
    except Exception as exc:  # no network, offline mode, a proxy: all end in the same advice
        # open_clip wraps the hub's error as "Failed to download file (...). Last error: <the hub's reason>".
        reason = " ".join(str(exc).split()).split("Last error: ", 1)[-1].split(". ")[0][:200]
        raise FeaturesError(
            f"no weights for {spec.name}: open_clip could not fetch the 'openai' weights of {source} "
            f"({type(exc).__name__}: {reason}); run once with network to fill the Hugging Face cache (HF_HOME), "
            "or pass --weights FILE (that repository's open_clip_model.safetensors, or another open_clip "
            "ViT-B-32 checkpoint)"
        ) from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_model(spec: ModelSpec, weights: str | os.PathLike[str]) -> nn.Module:
    """`spec`'s network with `weights` loaded, in eval mode, on the CPU; FeaturesError if they do not fit."""
    torch = _torch()
    if spec.kind == "open_clip":
        return _load_open_clip(spec, weights)
    from oiv4.stages.features import nets

    factory: Callable[[], nn.Module] = getattr(nets, spec.network)
    model = factory()
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # a pickle that is not a state_dict, missing or misshaped tensors
        first = " ".join(str(exc).split())[:200]
        raise FeaturesError(f"weights file {weights} does not fit model {spec.name}: {first}") from None
    return model.eval()


def _load_open_clip(spec: ModelSpec, weights: str | os.PathLike[str]) -> nn.Module:
    """The image tower of open_clip's `spec.network` with `weights`: its forward is `encode_image` (unnormalised)."""
    open_clip = _open_clip()
    try:
        model = open_clip.create_model(spec.network, pretrained=str(weights))
    except Exception as exc:  # not a checkpoint, another architecture's tensors, a TorchScript archive
        first = " ".join(str(exc).split())[:200]
        raise FeaturesError(f"weights file {weights} does not fit model {spec.name}: {first}") from None
    # The text tower (40% of the parameters) is never used: only the image tower is kept and moved.
    return model.visual.eval()
