"""VAE: the convolutional encoder predicts a Gaussian posterior (mean and log-variance); trained with MSE plus a
small KL weight (``extra["kl_weight"]``). For MatchGen and detection z_o is the posterior mean, never a sample,
so results are deterministic."""

from __future__ import annotations

import torch

from app.nets.base import AnomalyModel, ModelConfig
from app.nets.blocks import ConvDecoder, ConvEncoder
from app.nets.registry import register_family

DEFAULT_KL_WEIGHT = 1e-5  # per-pixel mean MSE + 1e-5 * KL(sum over z) ~ sum-MSE + 0.16 KL at 128x128


@register_family("vae")
class VAE(AnomalyModel):
    latent_description = "the posterior mean mu (latent_dim values), never a sample"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        self.encoder = ConvEncoder(c.channels, c.image_size, c.width, 2 * c.latent_dim)
        self.decoder = ConvDecoder(c.channels, c.image_size, c.width, c.latent_dim)

    @property
    def kl_weight(self) -> float:
        return float(self.config.extra.get("kl_weight", DEFAULT_KL_WEIGHT))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per image, summed over latent dimensions."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, logvar = self.posterior(x)
        noise = torch.randn(mu.shape, generator=generator).to(mu)
        z = mu + (0.5 * logvar).exp() * noise
        rec = (self.decode(z) - x).pow(2).mean()
        return rec + self.kl_weight * self.kl(mu, logvar).mean()
