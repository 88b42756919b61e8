"""DAE (Kascenas et al., "Denoising autoencoders for unsupervised anomaly detection in brain MRI", MIDL 2022):
a U-Net trained to remove coarse noise, i.e. Gaussian noise drawn at low resolution (``extra["noise_res"]``
pixels across, 16 in the paper for 128x128; several resolutions may be given, one drawn per image) and
upsampled, added on the foreground only, with std ``extra["noise_std"]`` (0.2 in the paper). Its pseudo-normal
image is the U-Net's output on the clean input.

What z is. The U-Net has no vector bottleneck: the decoder reads the bottleneck *and* every skip feature map.
Here z is all of them, flattened and concatenated into one vector (the encoder's features at every resolution).
Why:
* ``decode`` must be a pure function of z so MatchGen (and batching) works with any latent; keeping the skips
  fixed from x would need hidden state per input.
* The skip connections are how the U-Net copies an anomaly straight through to its output; if MatchGen could
  only move the bottleneck it could not take the anomaly out of the skips, while editing the skips inside the
  eps-ball lets it both remove the anomaly and match normal detail the denoiser blurred.
* The eps-ball then bounds the change of the whole representation; the calibrated eps range (model card) is in
  these units. The size of z is recorded as ``latent_size`` in the card.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from app.foreground import FOREGROUND_THRESHOLD
from app.nets.base import AnomalyModel, ModelConfig
from app.nets.blocks import UNet, unet_depth
from app.nets.registry import register_family


def coarse_noise(
    x: torch.Tensor,
    std: float,
    res: int,
    generator: torch.Generator | None = None,
    fg_threshold: float = FOREGROUND_THRESHOLD,
) -> torch.Tensor:
    """Gaussian noise drawn at res x res, upsampled bilinearly to the image size, zero outside the foreground."""
    b, c, h, w = x.shape
    n = torch.randn((b, c, res, res), generator=generator).to(x) * std
    n = F.interpolate(n, size=(h, w), mode="bilinear", align_corners=False)
    fg = (x.mean(dim=1, keepdim=True) > fg_threshold).to(x)
    return n * fg


def blob_gate(
    x: torch.Tensor,
    cover: float,
    res: int,
    generator: torch.Generator | None = None,
    fg_threshold: float = FOREGROUND_THRESHOLD,
    softness: float = 0.1,
) -> torch.Tensor:
    """A soft 0..1 mask per image that covers about ``cover`` of its foreground in random blobs: a Gaussian field
    drawn at res x res, upsampled bicubically, and thresholded at its (1 - cover) quantile over the image's
    foreground (a sigmoid of width ``softness`` in the field's units, so the blobs have soft edges)."""
    b, _, h, w = x.shape
    g = F.interpolate(torch.randn((b, 1, res, res), generator=generator).to(x), size=(h, w), mode="bicubic",
                      align_corners=False)  # fmt: skip
    fg = x.mean(dim=1, keepdim=True) > fg_threshold
    thr = torch.full((b,), float("inf"), dtype=x.dtype, device=x.device)
    for i in range(b):
        inside = g[i][fg[i]]
        if inside.numel():
            thr[i] = torch.quantile(inside.float(), 1.0 - cover).to(x.dtype)
    return torch.sigmoid((g - thr.view(-1, 1, 1, 1)) / softness) * fg.to(x)


def _resolutions(extra: dict, key: str, default: int) -> list[int]:
    """One resolution or several from a family option: a number, a list, or a comma-separated string (``--set``)."""
    v = extra.get(key, default)
    items = v.split(",") if isinstance(v, str) else (v if isinstance(v, list | tuple) else [v])
    out = [int(r) for r in items]
    if not out or min(out) < 1:
        raise ValueError(f"{key} {v!r}: give one or more positive resolutions")
    return out


def _per_image(x: torch.Tensor, resolutions: list[int], generator, draw) -> torch.Tensor:
    """``draw(res)`` for the one resolution, or for each image one of several drawn at random (the pick drawn
    first, then every resolution's field in order: seeded runs are reproducible)."""
    if len(resolutions) == 1:
        return draw(resolutions[0])
    pick = torch.randint(len(resolutions), (x.shape[0],), generator=generator).to(x.device)
    out = torch.zeros_like(x)
    for i, res in enumerate(resolutions):
        out = torch.where((pick == i).view(-1, 1, 1, 1), draw(res), out)
    return out


@register_family("dae")
class DenoisingAE(AnomalyModel):
    latent_description = (
        "all U-Net encoder feature maps (the bottleneck and every skip) flattened into one vector, so MatchGen "
        "can also change the skip features through which a U-Net copies anomalies"
    )

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        depth = int(c.extra.get("depth", unet_depth(c.image_size)))
        # extra["skips_from"]: leave out the skips of the finest levels (0: the paper's U-Net, every skip). The
        # finest skip carries the input's fine detail straight to the output, a lesion smaller than the training
        # noise's features included; without it the decoder must rebuild fine detail from coarser features. The
        # feature maps the decoder does not read are not part of z.
        self.skips_from = int(c.extra.get("skips_from", 0))
        # extra["mirror"]: the encoder also reads the slice mirrored left-right (1; 0, the default and the paper: the
        # slice alone). A lesion usually lies in one hemisphere, so where the input differs from its mirror image the
        # U-Net has the other side's tissue to restore from instead of only the lesion's own surroundings.
        self.mirror = int(c.extra.get("mirror", 0))
        if self.mirror not in (0, 1):
            raise ValueError(f"mirror {self.mirror!r}: give 0 (the slice alone) or 1 (the slice and its mirror image)")
        in_ch = c.channels * (2 if self.mirror else 1)
        self.unet = UNet(c.channels, c.image_size, c.width, depth, skips_from=self.skips_from, in_channels=in_ch)
        self.shapes = self.unet.shapes[self.skips_from :]
        self.sizes = [math.prod(s) for s in self.shapes]

    @property
    def latent_size(self) -> int:
        return sum(self.sizes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.mirror:  # left-right is the slices' last axis (app.data.pipeline: radiological, anterior up)
            x = torch.cat([x, x.flip(-1)], dim=1)
        return torch.cat([f.flatten(1) for f in self.unet.down(x)[self.skips_from :]], dim=1)

    def split(self, z: torch.Tensor) -> list[torch.Tensor | None]:
        parts = torch.split(z.flatten(1), self.sizes, dim=1)
        return [None] * self.skips_from + [p.reshape(-1, *s) for p, s in zip(parts, self.shapes, strict=True)]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.unet.up(self.split(z)))

    def noise_resolutions(self) -> list[int]:
        """``extra["noise_res"]``: one resolution (the paper), or several (a list, or a comma-separated string such
        as ``"8,16,32"`` from ``--set``), each training image then getting noise at one of them drawn at random --
        lesions come in many sizes, one noise scale teaches the denoiser to remove blobs of one size."""
        return _resolutions(self.config.extra, "noise_res", max(2, self.config.image_size // 8))

    def cover_resolutions(self) -> list[int]:
        """``extra["noise_cover_res"]``: the resolution of the blob field of :func:`blob_gate` (8 by default:
        blobs about an eighth of the image across), or several, one drawn per training image: a coarse field
        (2 or 4) puts the noise in one or two large regions, so regions as large as a big lesion are corrupted in
        training too (tried against large lesions copied into the pseudo-normal: docs/models.md)."""
        return _resolutions(self.config.extra, "noise_cover_res", 8)

    def noise_std_range(self) -> tuple[float, float]:
        """``extra["noise_std"]``: one std (the paper's 0.2), or a range ``"lo,hi"`` (a list or a comma-separated
        string from ``--set``) from which each training image draws its own std uniformly. With lo = 0 the
        denoiser also sees nearly clean inputs, which it must leave as they are -- a single std teaches it to
        remove noise-sized blobs from every input, normal tissue included."""
        v = self.config.extra.get("noise_std", 0.2)
        items = v.split(",") if isinstance(v, str) else (v if isinstance(v, list | tuple) else [v])
        vals = [float(s) for s in items]
        if len(vals) not in (1, 2) or min(vals) < 0 or vals[0] > vals[-1]:
            raise ValueError(f"noise_std {v!r}: give one std >= 0, or a range lo,hi with 0 <= lo <= hi")
        return vals[0], vals[-1]

    def training_noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The coarse noise added to a training batch (one of :meth:`noise_resolutions` per image, the std fixed
        or drawn per image from :meth:`noise_std_range`)."""
        lo, hi = self.noise_std_range()
        std = 1.0 if hi > lo else lo  # a range: unit noise here, scaled per image below
        noise = _per_image(x, self.noise_resolutions(), generator, lambda res: coarse_noise(x, std, res, generator))
        if hi > lo:  # a std per image, drawn after the noise so that a fixed std keeps its random stream
            per_image = lo + (hi - lo) * torch.rand((x.shape[0],), generator=generator).to(x)
            noise = noise * per_image.view(-1, 1, 1, 1)
        cover = self.noise_cover()
        if cover < 1.0:  # drawn last, so that the default (noise everywhere) keeps its random stream
            noise = noise * _per_image(x, self.cover_resolutions(), generator,
                                       lambda res: blob_gate(x, cover, res, generator))  # fmt: skip
        return noise

    def noise_cover(self) -> float:
        """``extra["noise_cover"]``: the fraction of each training image's foreground the coarse noise covers,
        in random soft-edged blobs (:func:`blob_gate`); 1 (the default, the paper) puts it everywhere. Noise
        everywhere teaches the U-Net to change every input, so on a clean scan it "removes" blobs of noise that
        are not there and the difference map is full of them; noise in a few blobs teaches it to keep tissue that
        looks normal and to replace only what does not fit its surroundings -- which is what a lesion is."""
        v = float(self.config.extra.get("noise_cover", 1.0))
        if not 0.0 < v <= 1.0:
            raise ValueError(f"noise_cover {v!r}: give a fraction in (0, 1]")
        return v

    def patch_p(self) -> float:
        """``extra["patch_p"]``: the probability that a training image also gets a foreign patch (0, the default
        and the paper: none). See :func:`paste_patches`: the U-Net must then put normal tissue where tissue that
        does not belong was pasted, not only remove noise."""
        v = float(self.config.extra.get("patch_p", 0.0))
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"patch_p {v!r}: give a probability in [0, 1]")
        return v

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training input: foreign patches (if ``patch_p`` > 0) and then the coarse noise."""
        noise = self.training_noise(x, generator)
        p = self.patch_p()
        if p > 0:  # drawn after the noise, so that the default keeps its random stream
            x = paste_patches(x, p, generator)
        return x + noise

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return (self.decode(self.encode(self.corrupt(x, generator))) - x).pow(2).mean()


PATCH_COVER = (0.02, 0.15)  # fraction of the foreground a pasted patch covers, drawn per batch
PATCH_RES = (4, 8)  # blob field resolution (one or two large regions, or a few smaller ones), drawn per batch
PATCH_GAIN = (0.7, 1.3)  # intensity factor of the pasted tissue, drawn per image: darker or brighter patches too


def paste_patches(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Paste, into each image with probability ``p``, tissue from another image of the batch in soft-edged random
    blobs (:func:`blob_gate` over the image's foreground): the source is the next image of the batch, flipped
    along a random axis, shifted by up to a quarter of the image and scaled by a gain from ``PATCH_GAIN``; only
    where the source holds tissue (its background is not pasted, with a 5-pixel soft edge). The
    result is plausible-looking tissue in the wrong place at any contrast, which a decoder that copies its input
    reproduces and a restoring one replaces (the self-supervised corruption of FPI / NSA, here as the training
    input of a denoiser whose target stays the clean image). A batch of one image pastes from itself."""
    b, _, h, w = x.shape
    cover = PATCH_COVER[0] + (PATCH_COVER[1] - PATCH_COVER[0]) * float(torch.rand((), generator=generator))
    res = PATCH_RES[int(torch.randint(len(PATCH_RES), (), generator=generator))]
    gate = blob_gate(x, cover, res, generator)
    src = torch.roll(x, 1, dims=0)
    flip = torch.randint(3, (b,), generator=generator)  # 0: none, 1: up-down, 2: left-right
    shift = torch.randint(-h // 4, h // 4 + 1, (b, 2), generator=generator)
    gain = PATCH_GAIN[0] + (PATCH_GAIN[1] - PATCH_GAIN[0]) * torch.rand((b,), generator=generator)
    use = torch.rand((b,), generator=generator) < p
    out = x.clone()
    for i in range(b):
        if not use[i]:
            continue
        s = src[i]
        if flip[i] > 0:
            s = torch.flip(s, dims=(int(flip[i]),))
        s = torch.roll(s, (int(shift[i, 0]), int(shift[i, 1])), dims=(1, 2)) * float(gain[i])
        inside = (s.mean(dim=0, keepdim=True) > FOREGROUND_THRESHOLD).to(x)  # tissue only, no background
        m = gate[i] * F.avg_pool2d(inside[None], 5, stride=1, padding=2)[0] * inside  # fades out within tissue
        out[i] = x[i] * (1 - m) + s.clamp(0, 1) * m
    return out
