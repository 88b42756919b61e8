"""GANomaly (Akcay et al., ACCV 2018): a generator that is an encoder-decoder-encoder (x -> z -> x_hat -> z_hat)
trained against a discriminator with three losses: adversarial (feature matching on the discriminator's last
features), contextual (L1 between x and x_hat, weight ``w_con`` = 50) and encoder (L2 between z and z_hat).
z is the first encoder's bottleneck. The discriminator is part of the module so that a checkpoint resumes
training; detection uses only encoder and decoder. The pixel map is |x - s| (GANomaly's own score ||z - z_hat||
is per image, not per pixel). The adversarial training step lives in :mod:`app.train.adversarial`."""

from __future__ import annotations

import torch

from app.nets.base import AnomalyModel, ModelConfig
from app.nets.blocks import ConvDecoder, ConvEncoder, Discriminator
from app.nets.registry import register_family


@register_family("ganomaly")
class GANomaly(AnomalyModel):
    latent_description = "the first encoder's bottleneck vector (latent_dim values)"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        self.encoder = ConvEncoder(c.channels, c.image_size, c.width, c.latent_dim)
        self.decoder = ConvDecoder(c.channels, c.image_size, c.width, c.latent_dim)
        self.encoder2 = ConvEncoder(c.channels, c.image_size, c.width, c.latent_dim)
        self.disc = Discriminator(c.channels, c.image_size, c.width)

    def weights(self) -> tuple[float, float, float]:
        e = self.config.extra
        return float(e.get("w_adv", 1.0)), float(e.get("w_con", 50.0)), float(e.get("w_enc", 1.0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def generator_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("disc.")]

    def generator_losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three generator losses (weighted sum in ``"total"``) and x_hat (``"fake"``)."""
        w_adv, w_con, w_enc = self.weights()
        z = self.encoder(x)
        fake = self.decoder(z)
        z_hat = self.encoder2(fake)
        _, f_real = self.disc(x)
        _, f_fake = self.disc(fake)
        adv = (f_real.detach().mean(0) - f_fake.mean(0)).pow(2).mean()
        con = (x - fake).abs().mean()
        enc = (z - z_hat).pow(2).mean()
        return {"total": w_adv * adv + w_con * con + w_enc * enc, "adv": adv, "con": con, "enc": enc, "fake": fake}

    def discriminator_loss(self, x: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        real_logit, _ = self.disc(x)
        fake_logit, _ = self.disc(fake.detach())
        return bce(real_logit, torch.ones_like(real_logit)) + bce(fake_logit, torch.zeros_like(fake_logit))

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The generator's weighted loss against the current discriminator (the full adversarial step
        alternates this with :meth:`discriminator_loss`)."""
        return self.generator_losses(x)["total"]
