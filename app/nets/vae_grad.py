"""VAE-Grad (Zimmerer et al., "Unsupervised anomaly localization using variational auto-encoders", MICCAI 2019):
the VAE family's network and training, with an anomaly map that combines the reconstruction error with the
gradient of the (deterministic) ELBO loss with respect to the input: map = |x - s| * smooth(|dL/dx|) / scale,
where L(x) = ||x - g(mu(x))||^2 + kl_weight * KL(mu(x), logvar(x)).

With MatchGen, ``s`` is s* and only the |x - s| factor changes: the gradient term is a property of the trained
VAE at x (MatchGen does not change the model), so base and +MG maps are built the same way. ``scale``
(``extra["grad_scale"]``) is the mean gradient magnitude over foreground pixels of the training images, set at the
end of training, so the gradient factor is about 1 on normal tissue and the map stays in intensity units like tau.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from app.foreground import FOREGROUND_THRESHOLD
from app.nets.registry import register_family
from app.nets.vae import VAE


def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    r = max(1, int(round(2 * sigma)))
    t = torch.arange(-r, r + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W), reflect-padded."""
    if sigma <= 0:
        return img
    k = _gaussian_kernel(sigma, img.device, img.dtype)
    r = k.numel() // 2
    img = F.conv2d(F.pad(img, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(img, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


@register_family("vae-grad")
class VAEGrad(VAE):
    latent_description = "the posterior mean mu (latent_dim values); the map adds the ELBO gradient w.r.t. x"

    def elbo_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """|d L / d x| averaged over channels, (B, 1, H, W); per image (the batch loss is a sum)."""
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            mu, logvar = self.posterior(xg)
            rec = (self.decode(mu) - xg).pow(2).flatten(1).sum(1)
            loss = (rec + self.kl_weight * self.kl(mu, logvar)).sum()
            (g,) = torch.autograd.grad(loss, xg)
        return g.abs().mean(dim=1, keepdim=True)

    def gradient_factor(self, x: torch.Tensor) -> torch.Tensor:
        sigma = float(self.config.extra.get("grad_sigma", 2.0))
        scale = float(self.config.extra.get("grad_scale", 1.0))
        return gaussian_blur(self.elbo_gradient(x), sigma) / scale

    def anomaly_map(self, x: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
        if s is None:
            with torch.no_grad():
                s = self.pseudo_normal(x)
        d = (x - s).abs().mean(dim=1, keepdim=True)
        return (d * self.gradient_factor(x)).detach().clamp(0.0, 1.0)

    @torch.no_grad()
    def fit_grad_scale(self, x: torch.Tensor, foreground_threshold: float = FOREGROUND_THRESHOLD) -> float:
        """Set ``extra["grad_scale"]`` to the mean smoothed gradient over foreground pixels of normal images x
        (the trainer calls this once after training)."""
        self.config.extra["grad_scale"] = 1.0
        g = self.gradient_factor(x)
        fg = (x.mean(dim=1, keepdim=True) > foreground_threshold).to(g)
        scale = float((g * fg).sum() / fg.sum().clamp_min(1.0))
        self.config.extra["grad_scale"] = max(scale, 1e-12)
        return self.config.extra["grad_scale"]

    def after_training(self, x: torch.Tensor) -> None:
        self.fit_grad_scale(x)
