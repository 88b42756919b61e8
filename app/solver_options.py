"""The solver's options (:class:`SolverOptions`) and the named configurations (:data:`FAST`; the paper's is
``SolverOptions()``): plain data, at the bottom of the import arrows, so that model cards (``app.nets.card``) can
name a solver without ``app.nets`` importing ``app.core`` (which imports the models). :mod:`app.core.matchgen`
re-exports them and documents what each option does to the search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.errors import OptionError

METHODS = ("penalty", "projected", "spg")
PRECISIONS = ("fp32", "bf16")


#: slices per solver batch in a whole-study run (``detect``, ``batch``, the viewer's volume run, ``bench speed``).
#: Masks do not depend on it (the solver keeps per-image state). 16 rather than 32: ``detect`` on the demo study gives
#: the same mask at 1.5 against 2.0 GB peak memory in 11.8-13.5 against 14.0-14.9 s (2 threads); 8 saves more memory
#: but was slower on one of two runs (docs/models.md, "An ensemble of two models' maps").
SOLVE_BATCH = 16


@dataclass(frozen=True)
class SolverOptions:
    """Constants of the solver. The defaults follow the paper where it says something (Adam, lr 1e-3,
    lambda starting at 1) and were chosen for a 128x128 slice and a 16-64 dimensional latent otherwise."""

    method: str = "penalty"
    lr: float = 1e-3
    max_steps: int = 1000
    #: a step "improves" an image when its best feasible loss drops by more than this fraction
    rtol: float = 1e-4
    #: steps without improvement (constraint holding) before an image stops; projected: before lr is halved
    patience: int = 25
    lambda0: float = 1.0
    #: lambda *= lambda_growth on each step where the image is outside the ball by more than feas_tol
    lambda_growth: float = 1.2
    lambda_max: float = 1e8
    #: absolute slack in z units within which the constraint counts as holding *for the stopping rule*
    feas_tol: float = 1e-3
    #: projected method: lr is multiplied by this on each stall, and the image stops below lr * min_lr_ratio
    lr_decay: float = 0.5
    min_lr_ratio: float = 1e-2
    #: the progress callback fires every this many steps (and once at the end)
    callback_every: int = 10
    #: "bf16": the search steps run the decoder under bfloat16 autocast (CPUs with AMX/AVX512-BF16 and GPUs do
    #: this several times faster; elsewhere it is emulated, many times slower, and the Detector runs float32:
    #: app.core.device.search_precision); the returned z is re-evaluated in float32, so ``loss`` and ``s`` are exact
    precision: str = "fp32"
    #: spg: the non-monotone line search accepts a step no worse than the maximum of this many recent losses
    spg_memory: int = 10
    #: spg: Armijo constant of the line search
    spg_armijo: float = 1e-4
    #: None (default, the paper's objective): mean |x - g(z)|. A number c: the mean of min(|x - g(z)|, c), a
    #: robust variant in which pixels already further than c from the pseudo-normal (a lesion the base model
    #: did not copy) no longer pull the search, so a larger eps can match the normal tissue without re-admitting
    #: them. Chosen on validation like eps, and recorded in the card.
    loss_cap: float | None = None

    def validate(self) -> SolverOptions:
        if self.method not in METHODS:
            raise OptionError(f"unknown solver method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise OptionError(f"learning rate must be positive, got {self.lr}")
        if self.max_steps < 0 or self.patience < 1 or self.callback_every < 1:
            raise OptionError("max_steps must be >= 0, patience and callback_every >= 1")
        if self.lambda0 <= 0 or self.lambda_growth < 1:
            raise OptionError("lambda0 must be > 0 and lambda_growth >= 1")
        if not (0 < self.lr_decay < 1) or not (0 < self.min_lr_ratio <= 1):
            raise OptionError("lr_decay must be in (0, 1) and min_lr_ratio in (0, 1]")
        if self.precision not in PRECISIONS:
            raise OptionError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.spg_memory < 1 or not (0 < self.spg_armijo < 1):
            raise OptionError("spg_memory must be >= 1 and spg_armijo in (0, 1)")
        if self.loss_cap is not None and not (self.loss_cap > 0 and math.isfinite(self.loss_cap)):
            raise OptionError(f"loss_cap must be a positive number or None, got {self.loss_cap}")
        return self


#: the fastest configuration measured on the project's models (``python main.py bench speed``, docs/benchmarks.md):
#: the spectral projected gradient method with bfloat16 search steps and a budget of 100 steps per image. Within
#: that budget it gets below the loss the paper-faithful solver (penalty, Adam lr 1e-3) reaches in 1000 steps; at
#: the large eps values chosen for some models the loss still creeps down after 100 steps, but the validation
#: Dice no longer changes, and the models' eps/tau were chosen on validation with these same maps.
FAST = SolverOptions(method="spg", precision="bf16", patience=10, max_steps=100)

#: the paper-faithful solver: penalty method, Adam lr 1e-3
PAPER = SolverOptions()
