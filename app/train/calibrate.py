"""Validation calibration of a trained model, written into its card: the eps range
(:func:`app.core.protocol.calibrate_eps_range`) and ``chosen = {eps, tau, tau_base, val_dice, val_dice_base}``
by mean per-image Dice on the validation split (:func:`app.core.protocol.choose_on_validation`), through the
shared Detector, so ``detect``, the viewer and the benchmarks start from these values. Never uses test data.

Kept cheap for a 2-core CPU: a subset of abnormal validation slices, the benchmark's fast solver (spectral
projected gradient, bfloat16 search steps) and a cap on solver steps; every eps is a cold start from z_o, as
``detect`` and the viewer apply it. The settings go into the card under ``calibration``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from app.nets.checkpoint import load_checkpoint, read_card, stem_of, write_card


@dataclass
class CalibrationSettings:
    subset: int = 32  # abnormal validation slices (evenly spaced) for both the eps range and the choice
    max_steps: int = 100  # solver steps per eps (each eps a cold start from z_o, as detect applies it)
    calibrate_max_steps: int = 200  # steps of the unconstrained solve that sets the eps range
    quantile: float = 0.9
    n_grid: int = 7
    n_fine: int = 3  # halvings of the first grid step (a finer look near 0)
    solver: str = "fast"  # "fast" (the benchmark's default) or "paper" (penalty, Adam lr 1e-3)
    batch_size: int = 16


def update_card(path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into a card atomically (the weights are not touched)."""
    stem = stem_of(path)
    card = read_card(stem)
    card.update(updates)
    write_card(stem, card)
    return card


def calibrate(path, data_dir: str, settings: CalibrationSettings | None = None, device="cpu", log=print) -> dict:
    from app.core.detector import Detector
    from app.core.matchgen import FAST, SolverOptions
    from app.core.protocol import DEFAULT_TAUS, calibrate_eps_range, choose_on_validation
    from app.data.splits import load_split

    st = settings or CalibrationSettings()
    stem = stem_of(path)
    model, card = load_checkpoint(stem, device)
    val = load_split(data_dir, "val")
    solver = replace(FAST) if st.solver == "fast" else SolverOptions()
    channels_last = st.solver == "fast"
    det = Detector(model, device, solver=solver, batch_size=st.batch_size, channels_last=channels_last)
    t0 = time.perf_counter()
    rng = calibrate_eps_range(
        det,
        val,
        subset=st.subset,
        quantile=st.quantile,
        n_grid=st.n_grid,
        n_fine=st.n_fine,
        max_steps=st.calibrate_max_steps,
    )
    t1 = time.perf_counter()
    log(f"{stem.name}: eps_max={rng.eps_max} (z0 spread {rng.z0_spread:.3g}) in {t1 - t0:.0f} s")
    choice = choose_on_validation(det, val, rng.grid, DEFAULT_TAUS, subset=st.subset, max_steps=st.max_steps)
    t2 = time.perf_counter()
    log(
        f"{stem.name}: val Dice base {choice.base_dice:.4f} (tau {choice.base_tau}), +MG {choice.dice:.4f} "
        f"(eps {choice.eps}, tau {choice.tau}) in {t2 - t1:.0f} s"
    )
    best_per_eps = {str(e): round(max(row), 6) for e, row in zip(choice.eps_grid, choice.table, strict=True)}
    return update_card(
        stem,
        {
            "eps_range": rng.as_dict(),
            "chosen": {
                "eps": choice.eps,
                "tau": choice.tau,
                "tau_base": choice.base_tau,
                "val_dice": round(choice.dice, 6),
                "val_dice_base": round(choice.base_dice, 6),
            },
            "calibration": {
                "data_dir": str(data_dir),
                "split": "val",
                "n_images": choice.n_images,
                "settings": {**st.__dict__, "channels_last": channels_last, "solver_options": solver.__dict__},
                "best_val_dice_per_eps": best_per_eps,
                "mean_steps_per_eps": {str(k): round(v, 1) for k, v in choice.mean_steps.items()},
                "seconds": {"eps_range": round(t1 - t0, 1), "choice": round(t2 - t1, 1)},
                "rule": "tau_base: best mean per-image Dice at eps = 0; (eps, tau): best over eps > 0",
            },
        },
    )
