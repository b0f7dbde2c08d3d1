"""A small registry of face-expression CNNs.

Every model takes ``(N, C, H, W)`` float32 input already normalised with the dataset mean/std, applies
per-image brightness/contrast normalisation itself (so it is part of the exported ONNX graph and the
runtime cannot forget it), and returns logits ``(N, K)``. The last layer is always ``head`` so
pretrained weights transfer to a new class count by dropping ``head.*``; ``embed(x)`` gives what ``head``
reads, so a second head can train on the same features (train/fit.py, ``--aux-recipe``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class PerImageStandardize(nn.Module):
    """Zero mean, unit variance per image: the 'brightness normalisation' of the original project."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + 1e-3)


def _conv_block(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding="same", bias=False), nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.1, inplace=True)]


class OriginalCNN(nn.Module):
    """The original EduMood CNN: 48x48, 4x4 kernels, batch norm, leaky ReLU, max pooling, dropout, 2 FC.

    ``kernel`` = 3 gives variant 1 (different kernel size); ``extra_convs`` = True gives variant 2 (an
    extra convolution in every stage).
    """

    def __init__(self, num_classes: int, channels: int = 1, kernel: int = 4, extra_convs: bool = False,
                 input_size: int = 48) -> None:
        super().__init__()
        layers: list[nn.Module] = [PerImageStandardize()]
        c_in = channels
        for c_out in (32, 64, 128):
            layers += _conv_block(c_in, c_out, kernel) + _conv_block(c_out, c_out, kernel)
            if extra_convs:
                layers += _conv_block(c_out, c_out, kernel)
            layers += [nn.MaxPool2d(2), nn.Dropout(0.25)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        flat = 128 * (input_size // 8) ** 2
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, 256), nn.LeakyReLU(0.1, inplace=True),
                                nn.Dropout(0.5))
        self.head = nn.Linear(256, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The features ``head`` reads (also what an auxiliary training head reads)."""
        return self.fc(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise + 1x1 pointwise, each with batch norm; residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
            nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.residual = stride == 1 and c_in == c_out
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.act(x + y if self.residual else y)


class FastCNN(nn.Module):
    """Depthwise-separable network: about 10x fewer multiply-adds than the original at 64x64."""

    def __init__(self, num_classes: int, channels: int = 1, width: int = 32,
                 stages: tuple[int, ...] = (2, 2, 2, 2), stem_stride: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            PerImageStandardize(),
            nn.Conv2d(channels, width, 3, stride=stem_stride, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        c = width
        for i, repeats in enumerate(stages):
            c_out = width * 2 ** min(i + 1, 3)
            for r in range(repeats):
                layers.append(DepthwiseSeparable(c, c_out, stride=2 if r == 0 else 1))
                c = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3))
        self.head = nn.Linear(c, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The features ``head`` reads (also what an auxiliary training head reads)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


@dataclass(frozen=True)
class Arch:
    """A registered architecture: a builder and the input size it was designed for."""

    build: Callable[[int, int], nn.Module]
    input_size: int
    description: str


ARCHS: dict[str, Arch] = {
    "original": Arch(lambda k, c: OriginalCNN(k, c, kernel=4), 48, "original CNN, 4x4 kernels"),
    "variant1": Arch(lambda k, c: OriginalCNN(k, c, kernel=3), 48, "variant 1: 3x3 kernels"),
    "variant2": Arch(lambda k, c: OriginalCNN(k, c, kernel=4, extra_convs=True), 48,
                     "variant 2: an extra conv layer per stage"),
    "fast": Arch(lambda k, c: FastCNN(k, c, width=32), 64, "depthwise-separable, 64x64"),
    # the same network at 80x80 (`fast` weights load into it): what a larger face buys, at 1.6x the cost
    "fast_80": Arch(lambda k, c: FastCNN(k, c, width=32), 80, "depthwise-separable, 80x80"),
    # the same layers (so `fast` weights load into it) on a stride-2 stem: 4x fewer multiply-adds
    "fast_s2": Arch(lambda k, c: FastCNN(k, c, width=32, stem_stride=2), 64,
                    "depthwise-separable, 64x64, stride-2 stem"),
    # the same again at 48x48 (FER-2013's own size): 0.6x the multiply-adds of fast_s2; shipped as `--model fast`
    "fast_s2_48": Arch(lambda k, c: FastCNN(k, c, width=32, stem_stride=2), 48,
                       "depthwise-separable, 48x48, stride-2 stem"),
    "fast_small": Arch(lambda k, c: FastCNN(k, c, width=16, stages=(1, 1, 1, 1)), 48,
                       "tiny depthwise-separable (tests, speed floor)"),
}


def build_model(arch: str, num_classes: int, channels: int = 1) -> nn.Module:
    """Instantiate a registered architecture; unknown names list the choices."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return ARCHS[arch].build(num_classes, channels)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Calibrated(nn.Module):
    """A trained network followed by its calibration (``logits / T + bias``): what an exported model computes."""

    def __init__(self, model: nn.Module, temperature: float, bias: list[float], num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("inv_temperature", torch.tensor(1.0 / temperature))
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32) if bias else torch.zeros(num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images) * self.inv_temperature + self.bias
