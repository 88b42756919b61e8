"""One training step per family. Most families minimise ``model.training_loss`` with Adam; the adversarial ones
(GANomaly, DDGAN) alternate a generator and a discriminator update with two optimizers. A third-party family
gets the plain step unless it registers its own here (:data:`STEPS`)."""

from __future__ import annotations

import torch

from app.nets.base import AnomalyModel


class PlainStep:
    """Adam on ``model.training_loss``."""

    default_lr = 1e-3
    main_loss = "loss"

    def __init__(self, model: AnomalyModel, lr: float | None = None):
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=lr or self.default_lr)

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.opt}

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        loss = self.model.training_loss(x, generator)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach())}


class GANomalyStep:
    """Generator (three losses) then discriminator (BCE), Adam(lr, betas=(0.5, 0.999)) as in the paper; the
    discriminator is re-initialised when its loss collapses (< 1e-5), as the reference code does."""

    default_lr = 2e-4
    main_loss = "con"

    def __init__(self, model, lr: float | None = None):
        self.model = model
        lr = lr or self.default_lr
        self.opt_g = torch.optim.Adam(model.generator_parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(model.disc.parameters(), lr=lr, betas=(0.5, 0.999))

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        m = self.model
        self.opt_g.zero_grad(set_to_none=True)
        losses = m.generator_losses(x)
        losses["total"].backward()
        self.opt_g.step()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss = m.discriminator_loss(x, losses["fake"])
        d_loss.backward()
        self.opt_d.step()
        if float(d_loss.detach()) < 1e-5:
            for mod in m.disc.modules():
                if hasattr(mod, "reset_parameters") and mod is not m.disc:
                    mod.reset_parameters()
        out = {k: float(v.detach()) for k, v in losses.items() if k != "fake"}
        out["disc"] = float(d_loss.detach())
        return out


class DDGANStep:
    """Discriminator on (true, generated) x_{t-1} pairs, then the generator (non-saturating adversarial loss plus
    the weighted L1 on x_0), Adam(lr, betas=(0.5, 0.9)) as in DDGAN."""

    default_lr = 2e-4
    main_loss = "rec"

    def __init__(self, model, lr: float | None = None):
        self.model = model
        lr = lr or self.default_lr
        self.opt_g = torch.optim.Adam(model.generator_parameters(), lr=lr, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(model.disc.parameters(), lr=lr, betas=(0.5, 0.9))

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        m = self.model
        batch = m.training_batch(x, generator)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss = m.discriminator_loss(batch)
        d_loss.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        losses = m.generator_loss(batch)
        losses["total"].backward()
        self.opt_g.step()
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["disc"] = float(d_loss.detach())
        return out


#: family -> step class (families not listed use PlainStep)
STEPS: dict[str, type] = {"ganomaly": GANomalyStep, "ddgan": DDGANStep}


def make_step(model: AnomalyModel, lr: float | None = None):
    return STEPS.get(model.config.family, PlainStep)(model, lr)
