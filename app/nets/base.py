"""The interface every base model implements, so that MatchGen, ``detect``, the viewer and the benchmarks
work with any family ("plug-and-play").

A model maps images x in [0, 1] of shape (B, C, H, W) to a latent z = encode(x) and back to a pseudo-normal
image s = decode(z). MatchGen optimises z, so ``decode`` must be differentiable in z and must treat batch
elements independently (models are used in eval mode: BatchNorm uses running statistics).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from app.errors import CheckpointError


@dataclass
class ModelConfig:
    """What a checkpoint needs to rebuild its network. Stored in the safetensors metadata and the JSON card."""

    family: str
    image_size: int = 128
    channels: int = 1
    latent_dim: int = 16
    width: int = 16
    #: intensity normalisation the model was trained with, e.g. "mri-percentile" or "ct-window:brain"
    normalization: str = "mri-percentile"
    #: family-specific settings (noise scale, number of diffusion steps, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        try:
            cfg = cls(**known)
        except TypeError as exc:
            raise CheckpointError(f"model config is incomplete: {exc}") from None
        if not isinstance(cfg.image_size, int) or cfg.image_size < 8:
            raise CheckpointError(f"model config has an invalid image_size {cfg.image_size!r}")
        if cfg.channels not in (1, 3):
            raise CheckpointError(f"model config has {cfg.channels} channels; 1 or 3 are supported")
        return cfg


class AnomalyModel(nn.Module):
    """Base class of all families. Subclasses set ``family`` and implement ``encode``, ``decode`` and
    ``training_loss``; the rest has sensible defaults."""

    family: ClassVar[str] = ""
    #: a short sentence on what z is for this family (shown in model cards and the docs)
    latent_description: ClassVar[str] = "the bottleneck vector"

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    # --- the MatchGen interface -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_o = phi(x): the deterministic latent of x (for a VAE the mean, never a sample)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """s = g(z): the pseudo-normal image, (B, C, H, W) in about [0, 1]."""
        raise NotImplementedError

    def pseudo_normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def anomaly_map(self, x: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
        """Per-pixel anomaly score (B, 1, H, W); by default |x - s| averaged over channels. ``s`` defaults to
        the base model's pseudo-normal; pass MatchGen's s* to get the +MG map of the same kind."""
        if s is None:
            s = self.pseudo_normal(x)
        return (x - s).abs().mean(dim=1, keepdim=True)

    # --- training ---------------------------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss of one training batch of normal images (families with an adversarial part expose their own
        training step in ``app.train``)."""
        raise NotImplementedError

    def after_training(self, x: torch.Tensor) -> None:
        """Hook the trainer calls once after training with a batch of normal training images, for post-hoc
        constants kept in ``config.extra`` (VAE-Grad's gradient scale). Default: nothing."""

    # --- helpers ----------------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        c, s = self.config.channels, self.config.image_size
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] != s or x.shape[3] != s:
            raise CheckpointError(
                f"model {self.family!r} expects images of shape (B, {c}, {s}, {s}), got {tuple(x.shape)}"
            )

    def freeze(self) -> AnomalyModel:
        """Eval mode and no parameter gradients: what MatchGen and detection need."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self
