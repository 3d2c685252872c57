"""The convolutional networks `oiv4 features` runs, written as plain torch modules.

Their parameter names follow the layout of torchvision's published ImageNet checkpoints
(`vgg16-397923af.pth`, `resnet50-11ad3fa6.pth`), so those files load into them unchanged with
`load_state_dict(strict=True)`; torchvision itself is not needed (its wheels pin one torch build each, and a
mismatched pair does not import). `TinyNet` is a few-layer network for tests and quick trials.

Each module's `forward` returns the embedding the registry names, not the classifier's logits.
"""

from __future__ import annotations

import torch
from torch import nn

#: VGG16's convolution widths; "M" is a 2x2 max-pool.
_VGG16_PLAN: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def _vgg_features(plan: tuple[int | str, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for width in plan:
        if width == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(width), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(width)
    return nn.Sequential(*layers)


class VGG16FC2(nn.Module):
    """VGG16 (configuration D, no batch norm); `forward` gives FC2's activations after its ReLU (4096-d)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg_features(_VGG16_PLAN)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        # Indices match the checkpoint: 0 FC1, 1 ReLU, 2 dropout, 3 FC2, 4 ReLU, 5 dropout, 6 the 1000 logits.
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 1000),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[:5](x)  # stop after FC2's ReLU; dropout is the identity in eval mode


class Bottleneck(nn.Module):
    """ResNet's 1x1-3x3-1x1 block; the stride sits on the 3x3 convolution, as in the published weights."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + shortcut)


class ResNet50Pool(nn.Module):
    """ResNet-50; `forward` gives the global average pool before the classifier (2048-d)."""

    def __init__(self, blocks: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(count):
                stage.append(Bottleneck(inplanes, planes, stride if j == 0 else 1))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, 1000)  # in the checkpoint; unused by `forward`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class TinyNet(nn.Module):
    """Two strided convolutions and a pool (16-d): fast enough to run a whole test set on one CPU core."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)
