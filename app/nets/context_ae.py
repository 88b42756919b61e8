"""CeAE: the AE-l1 architecture trained to reconstruct the whole input from a copy with an erased square
(context encoding, Zimmerer et al. / Pathak et al.). Erasing forces the model to inpaint from context, which
makes its pseudo-normal images less willing to copy local abnormal texture. At test time nothing is erased."""

from __future__ import annotations

import torch

from app.nets.autoencoder import AutoencoderL1
from app.nets.registry import register_family


def erase_random_squares(
    x: torch.Tensor, fraction: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image gets one square of side ``fraction * size`` at a random position set to 0.
    Returns (erased images, mask of erased pixels (B, 1, H, W))."""
    b, _, h, w = x.shape
    side = max(1, int(round(fraction * min(h, w))))
    dev = x.device
    top = torch.randint(0, h - side + 1, (b,), generator=generator).to(dev)
    left = torch.randint(0, w - side + 1, (b,), generator=generator).to(dev)
    rows = torch.arange(h, device=dev)[None, :, None]
    cols = torch.arange(w, device=dev)[None, None, :]
    inside = (
        (rows >= top[:, None, None]) & (rows < top[:, None, None] + side)
        & (cols >= left[:, None, None]) & (cols < left[:, None, None] + side)
    )  # fmt: skip
    mask = inside[:, None].to(x.dtype)
    return x * (1 - mask), mask


@register_family("ce-ae")
class ContextEncodingAE(AutoencoderL1):
    latent_description = "the bottleneck vector (latent_dim values); training erased one random square per image"

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        frac = float(self.config.extra.get("erase_fraction", 0.25))
        erased, _ = erase_random_squares(x, frac, generator)
        return (self.decode(self.encode(erased)) - x).abs().mean()
