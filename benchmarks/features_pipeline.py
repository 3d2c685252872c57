"""`oiv4 features` against the hand-written pipeline everyone writes: torchvision `ImageFolder` + the weights'
own transforms + a DataLoader with the same workers. Needs torchvision, so it runs in its own venv:

    python -m venv .venv-bench && .venv-bench/bin/pip install torch==2.14.1 torchvision==0.29.1 && .venv-bench/bin/pip install -e .
    .venv-bench/bin/python benchmarks/features_pipeline.py --images 400 --workers 1 --e2e-images 48

Builds a targets set from the mirror's CVDF archives (<= 1024 px JPEG members of zips) and unpacks the same
JPEGs into an ImageFolder tree for the baseline. Then, side by side:

1. input pipeline: stored JPEG -> normalised 3x224x224 batch, the model replaced by an identity. Ours: the
   features stage's dataset and loader (scaled strict decode, crop mapped onto the decoded image, uint8 to the
   device, normalised there); baseline: ImageFolder + `VGG16_Weights.IMAGENET1K_V1.transforms()`. Images per
   CPU-second (this process + its DataLoader workers) and the ratio;
2. end to end on the CPU with ResNet-50 (random weights, same batch and workers): `features_set` writing its
   npy/metadata/ledger against a loop over the baseline DataLoader calling torchvision's resnet50 with
   `fc = Identity`. Images per wall second and per CPU-second, and the ratios.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
import zipfile
from dataclasses import replace
from pathlib import Path


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _build(tmp: Path, images: int) -> tuple[Path, Path]:
    from oiv4.cli.demo import DemoSettings, demo_build_settings
    from oiv4.contracts.schema import ImageSet
    from oiv4.io.storage import Storage
    from oiv4.run.build import run_build
    from oiv4_mirror import UniverseSpec, start_mirror

    spec = UniverseSpec(
        seed=5, n_images=images, megapixels=(1.2, 2.0), validation_fraction=0.0, test_fraction=0.0, boxable_fraction=1.0
    )  # fmt: skip
    root = tmp / "root"
    with start_mirror(spec) as mirror:
        settings = demo_build_settings(DemoSettings(train_size=0, workers=1), mirror.base_url)
        settings = replace(settings, sets=(ImageSet.targets,), verify=False, hash=False, dedup=False, report=False)
        run_build(Storage(str(root)), settings)
    folder = tmp / "imagefolder" / "all"
    folder.mkdir(parents=True)
    for path in sorted(root.rglob("*.zip")):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith(".jpg"):
                    (folder / Path(name).name).write_bytes(zf.read(name))
    return root, folder.parent


def _stored_rows(root: Path) -> list[tuple[int, str, str]]:
    import pyarrow.compute as pc

    from oiv4.io.ledger import read_set
    from oiv4.io.storage import Storage

    t = read_set(Storage(str(root)), "targets")
    t = t.filter(pc.equal(t["outcome"], "ok"))
    return list(zip(t["row"].to_pylist(), t["image_id"].to_pylist(), t["location"].to_pylist(), strict=True))


def _ours_loader(root: Path, rows: list[tuple[int, str, str]], batch: int, workers: int):
    from oiv4.io.storage import Storage
    from oiv4.stages.features.loader import StoredImages, make_loader
    from oiv4.stages.features.preprocess import IMAGENET

    batches = [list(range(i, min(i + batch, len(rows)))) for i in range(0, len(rows), batch)]
    return make_loader(StoredImages(Storage(str(root)), rows, IMAGENET), batches, workers)


def _baseline_loader(folder: Path, batch: int, workers: int):
    import torch
    from torchvision.datasets import ImageFolder
    from torchvision.models import VGG16_Weights

    dataset = ImageFolder(str(folder), transform=VGG16_Weights.IMAGENET1K_V1.transforms())
    return torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers), len(dataset)


def input_pipeline(root: Path, folder: Path, batch: int, workers: int) -> float:
    import torchvision.datasets  # imported before timing: neither side pays for imports
    import torchvision.models  # noqa: F401

    from oiv4.stages.features.loader import Normalise
    from oiv4.stages.features.preprocess import IMAGENET

    normalise = Normalise(IMAGENET)  # the stage's own step on the device
    rows = _stored_rows(root)  # what the stage's plan hands each shard: not part of the input pipeline
    results = {}
    for name in ("baseline", "oiv4") * 3:  # three times each, interleaved: a shared machine drifts
        w0, c0 = time.perf_counter(), _cpu()
        n = 0
        if name == "oiv4":
            loader = _ours_loader(root, rows, batch, workers)
            for b in loader:
                x = normalise(b.crops)
                n += x.shape[0]
        else:
            loader, _ = _baseline_loader(folder, batch, workers)
            for x, _y in loader:
                n += x.shape[0]
        del loader  # workers exit and are reaped: their CPU time lands in RUSAGE_CHILDREN
        wall, cpu = time.perf_counter() - w0, _cpu() - c0
        results.setdefault(name, []).append((n, wall, cpu))
        print(f"  input {name:8s}: {n} images, wall {wall:.2f} s, CPU {cpu:.2f} s: {n / cpu:.0f} images/CPU-s")
    rate = {k: sum(r[0] for r in v) / sum(r[2] for r in v) for k, v in results.items()}
    ratio = rate["oiv4"] / rate["baseline"]
    print(f"input pipeline: oiv4 {rate['oiv4']:.0f} vs baseline {rate['baseline']:.0f} images/CPU-s: ratio {ratio:.2f}")
    return ratio


def end_to_end(root: Path, folder: Path, batch: int, workers: int) -> None:
    import numpy as np
    import torch
    from torchvision.models import resnet50

    from oiv4.io.storage import Storage
    from oiv4.run.executor import ExecutorSettings
    from oiv4.run.features import features_set
    from oiv4.stages.features import FeaturesSettings
    from oiv4.stages.features.nets import ResNet50Pool

    torch.manual_seed(0)
    weights = root.parent / "r50.pth"
    torch.save(ResNet50Pool().state_dict(), weights)
    net = resnet50()
    net.load_state_dict(torch.load(weights))  # the same weights: our network's keys are torchvision's
    net.fc = torch.nn.Identity()
    net.eval()

    settings = FeaturesSettings(model="resnet50", weights=str(weights), batch_size=batch, loader_workers=workers)
    results: dict[str, list[tuple[int, float, float]]] = {}
    for side in ("baseline", "oiv4") * 2:  # interleaved: a shared machine's load drifts between runs
        w0, c0 = time.perf_counter(), _cpu()
        if side == "baseline":
            loader, n = _baseline_loader(folder, batch, workers)
            out = []
            with torch.inference_mode():
                for x, _y in loader:
                    out.append(net(x).numpy().astype(np.float16))
            del loader
        else:
            shutil.rmtree(root / "features", ignore_errors=True)
            n = features_set(
                Storage(str(root)), "targets", settings, ExecutorSettings(kind="thread", workers=1)
            ).vectors
        results.setdefault(side, []).append((n, time.perf_counter() - w0, _cpu() - c0))
    results = {k: [tuple(map(sum, zip(*v, strict=True)))] for k, v in results.items()}  # type: ignore[misc]
    for k, [(m, wall, cpu)] in results.items():
        print(
            f"  e2e {k:8s}: {m} images, wall {wall:.1f} s, CPU {cpu:.1f} s: {m / wall:.2f} images/s, {m / cpu:.2f} /CPU-s"
        )
    [(n_b, w_b, c_b)], [(n_o, w_o, c_o)] = results["baseline"], results["oiv4"]
    print(
        f"end to end (resnet50, CPU): ratio oiv4/baseline wall {(n_o / w_o) / (n_b / w_b):.2f}, CPU {(n_o / c_o) / (n_b / c_b):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers on both sides")
    parser.add_argument("--e2e-images", type=int, default=48, help="0: skip the end-to-end comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, folder = _build(Path(tmp), args.images)
        print(f"targets: {sum(1 for _ in (folder / 'all').iterdir())} stored JPEGs")
        input_pipeline(root, folder, args.batch, args.workers)
        if args.e2e_images:
            small, small_folder = _build(Path(tmp) / "e2e-root", args.e2e_images)
            end_to_end(small, small_folder, min(args.batch, 16), args.workers)


if __name__ == "__main__":
    main()
