"""Convolutional encoder/decoder stacks that the vector-bottleneck families share. Depth scales with image size:
stride-2 stages until the feature map is ``bottom`` pixels wide (128 -> 8: four stages)."""

from __future__ import annotations

import math

import torch
from torch import nn


def n_stages(image_size: int, bottom: int = 8) -> int:
    if image_size % bottom or (image_size // bottom) & (image_size // bottom - 1):
        raise ValueError(f"image_size {image_size} must be {bottom} times a power of two")
    return int(math.log2(image_size // bottom))


def _chans(width: int, i: int, cap: int = 8) -> int:
    return width * min(2**i, cap)


class ConvEncoder(nn.Module):
    """x (B, C, S, S) -> vector (B, out_dim)."""

    def __init__(self, channels: int, image_size: int, width: int, out_dim: int, bottom: int = 8):
        super().__init__()
        k = n_stages(image_size, bottom)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        c = width
        for i in range(k):
            c2 = _chans(width, i + 1)
            layers += [nn.Conv2d(c, c2, 4, stride=2, padding=1), nn.BatchNorm2d(c2), nn.LeakyReLU(0.2)]
            c = c2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c * bottom * bottom, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """vector (B, in_dim) -> image (B, C, S, S) in [0, 1] (sigmoid)."""

    def __init__(self, channels: int, image_size: int, width: int, in_dim: int, bottom: int = 8):
        super().__init__()
        k = n_stages(image_size, bottom)
        self.bottom = bottom
        self.c0 = _chans(width, k)
        self.fc = nn.Linear(in_dim, self.c0 * bottom * bottom)
        layers: list[nn.Module] = []
        c = self.c0
        for i in reversed(range(k)):
            c2 = _chans(width, i)
            layers += [nn.ConvTranspose2d(c, c2, 4, stride=2, padding=1), nn.BatchNorm2d(c2), nn.LeakyReLU(0.2)]
            c = c2
        layers += [nn.Conv2d(c, channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z.flatten(1)).view(-1, self.c0, self.bottom, self.bottom)
        return torch.sigmoid(self.net(h))
