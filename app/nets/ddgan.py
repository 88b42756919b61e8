"""DDGAN (Xiao et al., "Tackling the generative learning trilemma with denoising diffusion GANs", ICLR 2022):
a diffusion model with few steps (``extra["steps"]`` T = 4) whose reverse step is a conditional GAN: the
generator G(x_t, t, w) predicts x_0 from the noisy x_t and a latent noise w, x_{t-1} is drawn from the posterior
q(x_{t-1} | x_t, x_0), and a discriminator D(x_{t-1}, x_t, t) tells true pairs from generated ones. Training adds
an L1 term on the predicted x_0 (``extra["w_rec"]``) so that a few CPU minutes give a usable model.

Anomaly detection: the input is diffused to step ``t_start`` (2 of 4 by default, partial noising as in AnoDDPM)
and the reverse chain runs back to x_0 = s. Everything random is fixed: the noise that diffuses the input, the
posterior noise and the latent w of every step are drawn once from ``extra["noise_seed"]`` and stored in the
checkpoint as buffers, the same for every image, so ``decode`` is deterministic, reproducible and independent of
batch neighbours.

What z is. z = x_{t_start}, the diffused input (an image-shaped tensor in the model's [-1, 1] scale), and the
decoder is the deterministic reverse chain with that fixed noise: the only input of the chain that depends on
the image, so MatchGen searches exactly the space the generator starts from; ``encode`` is the forward
diffusion with the fixed noise (no network). The eps-ball is in these units (calibrated in the card).
"""

from __future__ import annotations

import torch

from app.nets.base import AnomalyModel, ModelConfig
from app.nets.blocks import Discriminator, UNet, timestep_embedding, unet_depth
from app.nets.registry import register_family

EMB = 32


def alpha_bars(steps: int, beta_min: float, beta_max: float) -> torch.Tensor:
    """alpha_bar_t for t = 0..T of the variance-preserving schedule DDGAN discretises (alpha_bar_0 = 1)."""
    s = torch.arange(steps + 1, dtype=torch.float64) / steps
    return torch.exp(-(beta_min * s + 0.5 * (beta_max - beta_min) * s**2)).float()


@register_family("ddgan")
class DDGAN(AnomalyModel):
    latent_description = (
        "x_{t_start}: the input diffused to step t_start with fixed stored noise (image-shaped); the decoder is "
        "the deterministic reverse chain with fixed latent and posterior noise"
    )

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        e = c.extra
        self.steps = int(e.get("steps", 4))
        self.t_start = int(e.get("t_start", max(1, self.steps // 2)))
        if not 1 <= self.t_start <= self.steps:
            raise ValueError(f"t_start must be in 1..{self.steps}")
        #: training draws t from 1..train_t_max (default T). Detection only ever runs the chain from t_start, so
        #: train_t_max = t_start spends a short training budget on the steps that are used.
        self.train_t_max = int(e.get("train_t_max", self.steps))
        if not self.t_start <= self.train_t_max <= self.steps:
            raise ValueError(f"train_t_max must be in {self.t_start}..{self.steps}")
        self.nz = int(c.latent_dim)
        depth = int(e.get("depth", unet_depth(c.image_size)))
        self.gen = UNet(c.channels, c.image_size, c.width, depth, cond_dim=2 * EMB)
        self.w_map = torch.nn.Sequential(torch.nn.Linear(self.nz, EMB), torch.nn.SiLU(), torch.nn.Linear(EMB, EMB))
        self.disc = Discriminator(2 * c.channels, c.image_size, c.width, cond_dim=EMB)
        ab = alpha_bars(self.steps, float(e.get("beta_min", 0.1)), float(e.get("beta_max", 5.0)))
        self.register_buffer("alpha_bar", ab, persistent=False)
        g = torch.Generator().manual_seed(int(e.get("noise_seed", 0)))
        shape = (c.channels, c.image_size, c.image_size)
        self.register_buffer("enc_noise", torch.randn(shape, generator=g))
        self.register_buffer("post_noise", torch.randn((self.steps, *shape), generator=g))
        self.register_buffer("w_noise", torch.randn((self.steps, self.nz), generator=g))

    # --- diffusion ------------------------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise, t (B,) in 0..T, x0 in [-1, 1]."""
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A draw of x_{t-1} ~ q(x_{t-1} | x_t, x_0) (t >= 1; at t = 1 it is x_0)."""
        ab_t = self.alpha_bar[t].view(-1, 1, 1, 1)
        ab_p = self.alpha_bar[t - 1].view(-1, 1, 1, 1)
        beta = 1 - ab_t / ab_p
        c0 = ab_p.sqrt() * beta / (1 - ab_t)
        ct = (1 - beta).sqrt() * (1 - ab_p) / (1 - ab_t)
        var = beta * (1 - ab_p) / (1 - ab_t)
        return c0 * x0 + ct * xt + var.clamp_min(0).sqrt() * noise

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([timestep_embedding(t, EMB), self.w_map(w)], dim=1)
        return torch.tanh(self.gen(xt, cond))

    def disc_logit(self, x_prev: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.disc(torch.cat([x_prev, xt], dim=1), timestep_embedding(t, EMB))[0]

    # --- the MatchGen interface -----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.full((x.shape[0],), self.t_start, dtype=torch.long, device=x.device)
        return self.q_sample(2 * x - 1, t, self.enc_noise.expand_as(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        xt = z
        b = z.shape[0]
        x0 = z
        for step in range(self.t_start, 0, -1):
            t = torch.full((b,), step, dtype=torch.long, device=z.device)
            x0 = self.predict_x0(xt, t, self.w_noise[step - 1].expand(b, -1))
            if step > 1:
                xt = self.posterior(x0, xt, t, self.post_noise[step - 1].expand_as(xt))
        return (x0 + 1) / 2

    def generator_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("disc.")]

    # --- training -------------------------------------------------------------------------------------------
    def training_batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One DDGAN training sample per image: t ~ U{1..train_t_max}, the true pair (x_{t-1}, x_t), the
        generated x_{t-1} and the predicted x_0."""
        b = x.shape[0]
        x0 = 2 * x - 1
        t = torch.randint(1, self.train_t_max + 1, (b,), generator=generator).to(x.device)
        n1 = torch.randn(x.shape, generator=generator).to(x)
        n2 = torch.randn(x.shape, generator=generator).to(x)
        n3 = torch.randn(x.shape, generator=generator).to(x)
        w = torch.randn((b, self.nz), generator=generator).to(x)
        x_prev = self.q_sample(x0, t - 1, n1)
        ab_t, ab_p = self.alpha_bar[t].view(-1, 1, 1, 1), self.alpha_bar[t - 1].view(-1, 1, 1, 1)
        xt = (ab_t / ab_p).sqrt() * x_prev + (1 - ab_t / ab_p).sqrt() * n2
        x0_pred = self.predict_x0(xt, t, w)
        fake_prev = self.posterior(x0_pred, xt, t, n3)
        return {"t": t, "x0": x0, "xt": xt, "x_prev": x_prev, "fake_prev": fake_prev, "x0_pred": x0_pred}

    def generator_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sp = torch.nn.functional.softplus
        adv = sp(-self.disc_logit(batch["fake_prev"], batch["xt"], batch["t"])).mean()
        rec = (batch["x0_pred"] - batch["x0"]).abs().mean()
        w_rec = float(self.config.extra.get("w_rec", 10.0))
        return {"total": adv + w_rec * rec, "adv": adv, "rec": rec}

    def discriminator_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        sp = torch.nn.functional.softplus
        real = self.disc_logit(batch["x_prev"], batch["xt"], batch["t"])
        fake = self.disc_logit(batch["fake_prev"].detach(), batch["xt"], batch["t"])
        return sp(-real).mean() + sp(fake).mean()

    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generator_loss(self.training_batch(x, generator))["total"]


def chain_alpha_bar(model: DDGAN) -> list[float]:
    """The schedule as plain numbers (for the model card)."""
    return [round(float(v), 6) for v in model.alpha_bar]
