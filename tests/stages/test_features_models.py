"""The feature models without a root: torchvision-compatible weights load into our networks, the
preprocessing equals resize-then-crop, weights are found or refused with one line, extras are named."""

from __future__ import annotations

import importlib.metadata
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from oiv4.contracts.errors import FeaturesError
from oiv4.stages.features.models import MODELS, load_model, model_spec, resolve_weights, sha256_file
from oiv4.stages.features.nets import VGG16FC2, ResNet50Pool, TinyNet
from oiv4.stages.features.preprocess import IMAGENET


def _jpeg(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


#: A few parameter names and shapes of torchvision's published vgg16-397923af.pth / resnet50-11ad3fa6.pth.
VGG16_KEYS = {"features.0.weight": (64, 3, 3, 3), "features.28.bias": (512,), "classifier.3.weight": (4096, 4096)}
RESNET50_KEYS = {
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer4.2.bn3.running_var": (2048,),
    "fc.weight": (1000, 2048),
}


def test_networks_have_the_parameter_names_and_shapes_of_torchvisions_published_checkpoints():
    vgg, resnet = VGG16FC2().state_dict(), ResNet50Pool().state_dict()
    assert len(vgg) == 32 and len(resnet) == 320  # as many entries as the published files
    assert {k: tuple(vgg[k].shape) for k in VGG16_KEYS} == VGG16_KEYS
    assert {k: tuple(resnet[k].shape) for k in RESNET50_KEYS} == RESNET50_KEYS


def test_vgg16_fc2_loads_a_saved_state_dict_and_gives_4096_nonnegative_activations(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(VGG16FC2().state_dict(), path)  # the real format: a state_dict through torch.save
    model = load_model(model_spec("vgg16-fc2"), path)
    crops = np.stack([IMAGENET.from_bytes(_jpeg(640, 480, s)) for s in range(2)])
    x = torch.from_numpy(IMAGENET.normalise(crops))
    with torch.inference_mode():
        out = model(x)
    assert tuple(out.shape) == (2, 4096)
    assert float(out.min()) >= 0.0  # taken after FC2's ReLU
    assert not torch.equal(out[0], out[1])


def test_resnet50_loads_a_saved_state_dict_and_gives_2048_pooled_features(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "r50.pth"
    torch.save(ResNet50Pool().state_dict(), path)
    model = load_model(model_spec("resnet50"), path)
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 224, 224))
    assert tuple(out.shape) == (1, 2048)


def test_weights_of_another_network_are_refused_in_one_line(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(FeaturesError, match=r"does not fit model resnet50"):
        load_model(model_spec("resnet50"), path)


def test_scaled_crop_equals_full_resize_then_center_crop():
    for w, h in ((1024, 683), (500, 800), (300, 300)):
        data = _jpeg(w, h, seed=w)
        ours = IMAGENET.pixels(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)
        full = Image.open(io.BytesIO(data)).convert("RGB")
        short = min(w, h)
        size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
        resized = full.resize(size, Image.Resampling.BILINEAR)
        left, top = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
        theirs = np.asarray(resized.crop((left, top, left + 224, top + 224))).astype(np.int16)
        assert ours.shape == theirs.shape == (224, 224, 3), short
        assert np.abs(ours - theirs).mean() < 1.0  # the same picture; resampling rounds a little differently


def test_jpegs_are_decoded_at_reduced_scale_but_never_below_the_resize():
    assert IMAGENET.target_side(1024, 683) == 384  # shorter side 683 -> 256: libjpeg may decode at 3/8
    crop = IMAGENET.from_bytes(_jpeg(1024, 683))
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(FeaturesError, match="unknown model 'vgg19': choose one of vgg16-fc2, resnet50, clip-vit-b-32"):
        model_spec("vgg19")


def test_weights_come_from_the_file_given_or_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    cached.parent.mkdir(parents=True)
    torch.save(ResNet50Pool().state_dict(), cached)
    assert resolve_weights(MODELS["resnet50"], None) == cached
    other = tmp_path / "mine.pth"
    other.write_bytes(cached.read_bytes())
    assert resolve_weights(MODELS["resnet50"], str(other)) == other
    assert sha256_file(other) == sha256_file(cached)
    with pytest.raises(FeaturesError, match=r"--weights .*nope.pth: no such file"):
        resolve_weights(MODELS["resnet50"], str(tmp_path / "nope.pth"))
    with pytest.raises(FeaturesError, match="tiny-cnn has no published weights: pass --weights FILE"):
        resolve_weights(MODELS["tiny-cnn"], None)


def test_no_network_and_no_cache_says_where_the_weights_come_from_and_how_to_supply_them(tmp_path):
    # A proxy nobody listens on: the download fails at once, whatever network this machine has.
    code = (
        "import torch, sys; torch.hub.set_dir(sys.argv[1]);"
        "from oiv4.stages.features.models import MODELS, resolve_weights; resolve_weights(MODELS['vgg16-fc2'], None)"
    )
    env = {"PATH": "/usr/bin:/bin", "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in last
    assert f"{tmp_path}/checkpoints/vgg16-397923af.pth" in last and "--weights FILE" in last


def test_clip_without_the_clip_extra_is_a_one_line_hint(tmp_path):
    (tmp_path / "metadata").mkdir()  # an oiv4 root: the root is checked before the extra
    code = (
        "import sys; sys.modules['open_clip'] = None\n"  # what an absent package does to `import open_clip`
        "from oiv4.cli import main; sys.argv = ['oiv4', 'features', 'targets', '--root', sys.argv[1], '--model', 'clip-vit-b-32']\n"
        "main()"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "oiv4 features: the clip-vit-b-32 model needs the [clip] extra: in the oiv4 clone, pip install '.[clip]'"
    )


def test_a_torchvision_built_for_another_torch_is_one_line_naming_both_and_the_remedy(tmp_path):
    # What this machine's index gives: the CUDA torchvision wheel beside the CPU torch, whose import stops here.
    fake = tmp_path / "site" / "open_clip"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    (tmp_path / "root" / "metadata").mkdir(parents=True)
    code = (
        "import sys; from oiv4.cli import main\n"
        "sys.argv = ['oiv4', 'features', 'targets', '--root', sys.argv[1], '--model', 'clip-vit-b-32']\nmain()"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "root")], capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    torch_version, torchvision_version = (importlib.metadata.version(n) for n in ("torch", "torchvision"))
    assert line == (
        f"oiv4 features: the clip-vit-b-32 model cannot import open_clip: torchvision {torchvision_version} was not "
        f"built for torch {torch_version} (RuntimeError: operator torchvision::nms does not exist); install the "
        "torchvision wheel from the index this torch came from (a CPU torch: pip install "
        f"torchvision=={torchvision_version.split('+')[0]} --index-url https://download.pytorch.org/whl/cpu)"
    )


def test_features_without_torch_is_a_one_line_hint_naming_the_features_extra(tmp_path):
    (tmp_path / "metadata").mkdir()  # an oiv4 root: the root is checked before the extra
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from oiv4.cli import main; sys.argv = ['oiv4', 'features', 'targets', '--root', sys.argv[1], '--model', 'resnet50']\n"
        "main()"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.strip()
        == "oiv4 features: oiv4 features needs the [features] extra: in the oiv4 clone, pip install '.[features]'"
    )
