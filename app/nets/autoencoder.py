"""AE-l1: a convolutional autoencoder with a vector bottleneck trained with L1 (Baur et al.'s AE baseline).
It is also the small reference model the tests use."""

from __future__ import annotations

import torch

from app.nets.base import AnomalyModel, ModelConfig
from app.nets.blocks import ConvDecoder, ConvEncoder
from app.nets.registry import register_family


@register_family("ae-l1")
class AutoencoderL1(AnomalyModel):
    latent_description = "the bottleneck vector (latent_dim values)"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        self.encoder = ConvEncoder(c.channels, c.image_size, c.width, c.latent_dim)
        self.decoder = ConvDecoder(c.channels, c.image_size, c.width, c.latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return (self.pseudo_normal(x) - x).abs().mean()
