"""Network blocks the families share: convolutional encoder/decoder stacks (vector-bottleneck families),
a U-Net (DAE, DDGAN) and a discriminator (GANomaly, DDGAN). Depth scales with image size: stride-2 stages until
the feature map is ``bottom`` pixels wide (128 -> 8: four stages)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def n_stages(image_size: int, bottom: int = 8) -> int:
    if image_size % bottom or (image_size // bottom) & (image_size // bottom - 1):
        raise ValueError(f"image_size {image_size} must be {bottom} times a power of two")
    return int(math.log2(image_size // bottom))


def _chans(width: int, i: int, cap: int = 8) -> int:
    return width * min(2**i, cap)


def downsampling_stack(
    channels: int, image_size: int, width: int, bottom: int, norm: Callable[[int], nn.Module]
) -> tuple[nn.Sequential, int]:
    """A 3x3 stem, then stride-2 stages (conv, ``norm(c)``, LeakyReLU) down to ``bottom`` pixels; returns the
    stack and its output channels. Shared by the encoders and the critic (same layer order, same state keys)."""
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
    c = width
    for i in range(n_stages(image_size, bottom)):
        c2 = _chans(width, i + 1)
        layers += [nn.Conv2d(c, c2, 4, stride=2, padding=1), norm(c2), nn.LeakyReLU(0.2)]
        c = c2
    return nn.Sequential(*layers), c


class ConvEncoder(nn.Module):
    """x (B, C, S, S) -> vector (B, out_dim)."""

    def __init__(self, channels: int, image_size: int, width: int, out_dim: int, bottom: int = 8):
        super().__init__()
        self.features, c = downsampling_stack(channels, image_size, width, bottom, nn.BatchNorm2d)
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
            layers += [
                nn.ConvTranspose2d(c, c2, 4, stride=2, padding=1),
                nn.BatchNorm2d(c2),
                nn.LeakyReLU(0.2),
            ]
            c = c2
        layers += [nn.Conv2d(c, channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z.flatten(1)).view(-1, self.c0, self.bottom, self.bottom)
        return torch.sigmoid(self.net(h))


# --- U-Net (DAE, DDGAN generator) ---------------------------------------------------------------------------


def _groups(c: int) -> int:
    """GroupNorm groups: per-sample statistics, so eval mode and batch neighbours never change a result."""
    for g in (8, 4, 2, 1):
        if c % g == 0:
            return g
    return 1


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(_groups(cout), cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(_groups(cout), cout), nn.SiLU(),
    )  # fmt: skip


class UNet(nn.Module):
    """A U-Net split into ``down`` (image -> list of feature maps: the skips, the last one the bottleneck) and
    ``up`` (feature maps -> image), so a family can choose what its latent z is. ``cond_dim > 0`` adds a
    conditioning vector (diffusion step embedding, latent noise) as a per-channel bias at every decoder stage.
    ``skips_from > 0`` leaves out the skips of the finest ``skips_from`` levels: there the decoder reads only what it
    upsampled from the coarser level (``up`` ignores those feature maps, which may be None). ``in_channels`` (default
    ``channels``) is what ``down`` reads, when a family feeds it more than the image it outputs."""

    def __init__(
        self, channels: int, image_size: int, width: int, depth: int, cond_dim: int = 0, cap: int = 8,
        skips_from: int = 0, in_channels: int | None = None,
    ):  # fmt: skip
        super().__init__()
        if image_size % (2**depth):
            raise ValueError(f"image_size {image_size} must be divisible by 2**{depth}")
        if not 0 <= skips_from <= depth:
            raise ValueError(f"skips_from {skips_from}: give 0 (every skip) to {depth} (none)")
        self.depth = depth
        self.skips_from = skips_from
        chans = [_chans(width, i, cap) for i in range(depth + 1)]
        self.chans = chans
        self.inc = conv_block(in_channels or channels, chans[0])
        self.downs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1),
                conv_block(chans[i + 1], chans[i + 1]),
            )
            for i in range(depth)
        )
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 4, stride=2, padding=1) for i in range(depth)
        )
        self.merges = nn.ModuleList(
            conv_block((2 if i >= skips_from else 1) * chans[i], chans[i]) for i in range(depth)
        )
        self.cond = nn.ModuleList(nn.Linear(cond_dim, chans[i]) for i in range(depth + 1)) if cond_dim > 0 else None
        self.out = nn.Conv2d(chans[0], channels, 1)
        self.shapes = [(chans[i], image_size // 2**i, image_size // 2**i) for i in range(depth + 1)]

    def down(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.inc(x)]
        for d in self.downs:
            feats.append(d(feats[-1]))
        return feats

    def up(self, feats: list[torch.Tensor], cond: torch.Tensor | None = None) -> torch.Tensor:
        """Raw output (no final activation)."""
        h = feats[-1]
        if self.cond is not None and cond is not None:
            h = h + self.cond[self.depth](cond)[:, :, None, None]
        for i in reversed(range(self.depth)):
            u = self.ups[i](h)
            # the skip in the up-path's dtype: under bfloat16 autocast (the fast solver) the merge convolution
            # reads bfloat16 either way, but a float32 skip made cat promote to float32 and the convolution cast
            # back -- two copies of every skip per decode and per backward, the same values bit for bit
            h = self.merges[i](torch.cat([u, feats[i].to(u.dtype)], dim=1) if i >= self.skips_from else u)
            if self.cond is not None and cond is not None:
                h = h + self.cond[i](cond)[:, :, None, None]
        return self.out(h)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.up(self.down(x), cond)


def unet_depth(image_size: int, bottom: int = 8, max_depth: int = 4) -> int:
    """Stages down to ``bottom`` pixels, at most ``max_depth`` (128 -> 4, 32 -> 2)."""
    return min(max_depth, n_stages(image_size, bottom))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps t (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return nn.functional.pad(emb, (0, dim - emb.shape[1]))


class Discriminator(nn.Module):
    """A DCGAN-style critic: image (B, C, S, S) -> (logit (B,), features (B, F)). ``cond_dim > 0`` adds a
    conditioning vector to the last feature map (DDGAN's step embedding)."""

    def __init__(self, channels: int, image_size: int, width: int, bottom: int = 8, cond_dim: int = 0):
        super().__init__()
        self.features, c = downsampling_stack(
            channels, image_size, width, bottom, lambda c2: nn.GroupNorm(_groups(c2), c2)
        )
        self.cond = nn.Linear(cond_dim, c) if cond_dim > 0 else None
        self.head = nn.Linear(c * bottom * bottom, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        if self.cond is not None and cond is not None:
            h = h + self.cond(cond)[:, :, None, None]
        f = h.flatten(1)
        return self.head(f).squeeze(1), f
