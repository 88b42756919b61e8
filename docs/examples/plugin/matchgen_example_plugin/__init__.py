"""An example third-party family: a fully connected autoencoder. It only subclasses
:class:`app.nets.base.AnomalyModel` and implements ``encode``, ``decode`` and ``training_loss``; the entry point
in ``pyproject.toml`` registers it under the name ``example-mlp-ae`` (the class needs no decorator)."""

from __future__ import annotations

import torch
from torch import nn

from app.nets.base import AnomalyModel, ModelConfig


class MLPAutoencoder(AnomalyModel):
    latent_description = "a vector of latent_dim values from a fully connected encoder"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        n = config.channels * config.image_size**2
        hidden = int(config.extra.get("hidden", 64))
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, config.latent_dim))
        self.dec = nn.Sequential(nn.Linear(config.latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, n))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c, s = self.config.channels, self.config.image_size
        return torch.sigmoid(self.dec(z)).view(-1, c, s, s)

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return (self.pseudo_normal(x) - x).abs().mean()
