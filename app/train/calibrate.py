"""Validation calibration of a trained model, written into its card: the eps range
(:func:`app.core.protocol.calibrate_eps_range`) and ``chosen = {eps, tau, tau_base, val_dice, val_dice_base}``
by mean per-image Dice on the validation split (:func:`app.core.protocol.choose_on_validation`), through the
shared Detector, so ``detect``, the viewer and the benchmarks start from these values. Never uses test data.

Kept cheap for a 2-core CPU: a subset of abnormal validation slices, the benchmark's fast solver (spectral
projected gradient, bfloat16 search steps) and a cap on solver steps; every eps is a cold start from z_o, as
``detect`` and the viewer apply it. The settings go into the card under ``calibration``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from app.core.protocol import Z_GRID_MM
from app.nets.card import card_eps_reference_area
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
    postprocess: bool = True  # choose median / erosion / minimum component on the base model's validation maps
    #: where the post-processing is chosen: "volumes" (the base model's whole-volume Dice on the validation
    #: volumes, what detect applies; falls back to slices when the data set has none) or "slices" (mean per-image
    #: Dice on the abnormal validation slices of the subset, as before 2026-12-04)
    post_on: str = "volumes"
    extend: int = 2  # times the eps grid may grow (1.5x, 2x, 3x its top) while +MG's best eps is its largest
    volumes: bool = True  # also choose (eps, tau) for whole volumes on the validation volumes, when present
    #: the solver's capped objective (``SolverOptions.loss_cap``; None: the paper's plain L1), recorded in the card
    loss_cap: float | None = None
    layout: str = "auto"  # fast solver's memory layout: "auto" (the faster, measured), "channels_last", "contiguous"
    #: z windows (mm) tried after the whole-volume (eps, tau) choice, at that eps; () or (0,) keeps D per slice
    z_grid_mm: tuple[float, ...] = Z_GRID_MM


LAYOUTS = ("auto", "channels_last", "contiguous")
POST_ON = ("volumes", "slices")
POST_RULES = {
    "volumes": "chosen on the base model (eps = 0) by mean whole-volume Dice over the validation volumes (every "
    "slice of a realisation's block pooled, normal slices included), then held fixed for every eps (base and +MG "
    "alike)",
    "slices": "chosen on the base model (eps = 0) by mean per-image Dice on abnormal validation slices, then held "
    "fixed for every eps (base and +MG alike)",
    None: "none: the maps as the model gives them",
}
#: solver steps timed per layout by :func:`choose_layout` (after one warm-up batch)
LAYOUT_STEPS = 4


def choose_layout(model, device, solver, images, batch_size: int, repeats: int = 2) -> tuple[bool, dict]:
    """Time :data:`LAYOUT_STEPS` solver steps on one validation batch in the stock layout and in channels_last
    (BatchNorm folded in both, as ``detect`` runs it), each after a warm-up; returns (channels_last is faster,
    the seconds per batch of each). Which is faster depends on the model: channels_last gives oneDNN its fast
    convolutions, but a U-Net's GroupNorm and skip concatenations can cost more in it (measured on the dae:
    1.96 vs 1.34 s per slice over a volume, docs/benchmarks.md)."""
    import statistics

    import torch

    from app.core.detector import Detector

    x = torch.as_tensor(np.asarray(images[:batch_size], dtype=np.float32))
    seconds = {}
    for name, cl in (("contiguous", False), ("channels_last", True)):
        det = Detector(model, device, solver=solver, batch_size=batch_size, channels_last=cl)
        xb = det._to_tensor(x)
        times = []
        for i in range(repeats + 1):
            t = time.perf_counter()
            det.solve_batch(xb, 1.0, max_steps=LAYOUT_STEPS, patience=LAYOUT_STEPS + 1)
            if i:
                times.append(time.perf_counter() - t)
        seconds[name] = round(statistics.median(times), 4)
    return seconds["channels_last"] < seconds["contiguous"], {
        "seconds_per_batch": seconds,
        "steps": LAYOUT_STEPS,
        "batch": int(x.shape[0]),
    }


def update_card(path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into a card atomically (the weights are not touched)."""
    stem = stem_of(path)
    card = read_card(stem)
    card.update(updates)
    write_card(stem, card)
    return card


def calibrate(path, data_dir: str, settings: CalibrationSettings | None = None, device="cpu", log=print) -> dict:
    from app.core.detector import Detector, PostProcessing
    from app.core.matchgen import FAST, SolverOptions
    from app.core.protocol import (
        DEFAULT_TAUS,
        POST_GRID,
        calibrate_eps_range,
        choose_on_validation,
        choose_on_volumes,
        choose_postprocessing_on_volumes,
    )
    from app.data.splits import load_split

    st = settings or CalibrationSettings()
    stem = stem_of(path)
    model, card = load_checkpoint(stem, device)
    val = load_split(data_dir, "val")
    solver = replace(FAST if st.solver == "fast" else SolverOptions(), loss_cap=st.loss_cap).validate()
    layout_facts = None
    if st.layout not in LAYOUTS:
        raise ValueError(f"layout {st.layout!r}: one of {', '.join(LAYOUTS)}")
    if st.post_on not in POST_ON:
        raise ValueError(f"post_on {st.post_on!r}: one of {', '.join(POST_ON)}")
    if st.solver != "fast" or st.layout == "contiguous":
        channels_last = False  # the paper's solver is the reference: the stock layout
    elif st.layout == "channels_last":
        channels_last = True
    else:
        channels_last, layout_facts = choose_layout(model, device, solver, val.images, st.batch_size)
        lf = layout_facts
        log(
            f"{stem.name}: layout {'channels_last' if channels_last else 'contiguous'} "
            f"(s per batch of {lf['batch']}, {lf['steps']} steps: {lf['seconds_per_batch']})"
        )
    det = Detector(model, device, solver=solver, batch_size=st.batch_size, channels_last=channels_last,
                   eps_reference_area=card_eps_reference_area(card))  # fmt: skip
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
    post_on_volumes = st.postprocess and st.post_on == "volumes"
    vols = _validation_volumes(data_dir, log) if st.volumes or post_on_volumes else None
    post_source, post_table = ("slices" if st.postprocess else None), None
    if post_on_volumes and vols is not None:
        det.post, post_table = choose_postprocessing_on_volumes(det, vols, DEFAULT_TAUS, POST_GRID)
        post_source = "volumes"
        log(f"{stem.name}: post-processing {det.post.as_dict()} chosen on the base model's validation volumes")
    choice = choose_on_validation(
        det,
        val,
        rng.grid,
        DEFAULT_TAUS,
        subset=st.subset,
        max_steps=st.max_steps,
        post_grid=POST_GRID if post_source == "slices" else None,
        extend=st.extend,
    )
    t2 = time.perf_counter()
    log(
        f"{stem.name}: post-processing {choice.post}; val Dice base {choice.base_dice:.4f} (tau {choice.base_tau}), "
        f"+MG {choice.dice:.4f} (eps {choice.eps}, tau {choice.tau}) in {t2 - t1:.0f} s"
        + ("" if choice.peak_inside_grid else " -- the best eps is the top of the grid")
    )
    det.post = PostProcessing(det.post.foreground_threshold, **choice.post)
    grid = choice.eps_grid
    updates: dict[str, Any] = {}
    volume_seconds = None
    z_mm = 0.0
    if st.volumes:
        if vols is not None:
            want_z = bool(set(st.z_grid_mm) - {0.0})
            if want_z and getattr(vols, "slice_mm", None) is None:
                want_z = False
                log(
                    f"{stem.name}: no z window: the validation volumes do not record their slice spacing (a data "
                    "set built before z windows existed; rebuild it with `python main.py data brain-proxy`)"
                )
            vc = choose_on_volumes(
                det, vols, grid, DEFAULT_TAUS, max_steps=st.max_steps, z_grid_mm=st.z_grid_mm if want_z else None
            )
            volume_seconds = round(time.perf_counter() - t2, 1)
            log(
                f"{stem.name}: validation volumes ({vc.n_volumes}): Dice base {vc.base_dice:.4f} (tau {vc.base_tau}), "
                f"+MG {vc.dice:.4f} (eps {vc.eps}, tau {vc.tau}) in {volume_seconds:.0f} s; at that eps the "
                f"constraint binds on {vc.binding_fraction:.0%} of the solved slices, {vc.step_cap_fraction:.0%} "
                f"use up the {st.max_steps}-step budget, {vc.mean_steps:.1f} steps on average"
            )
            updates["chosen_volume"] = {
                "eps": vc.eps,
                "tau": vc.tau,
                "tau_base": vc.base_tau,
                "val_volume_dice": round(vc.dice, 6),
                "val_volume_dice_base": round(vc.base_dice, 6),
                "n_volumes": vc.n_volumes,
                # does the solver converge at the eps detect applies, within the budget it applies it with?
                "binding_fraction": _rounded(vc.binding_fraction, 4),
                "step_cap_fraction": _rounded(vc.step_cap_fraction, 4),
                "mean_steps": _rounded(vc.mean_steps, 1),
                "best_val_volume_dice_per_eps": {
                    str(e): round(max(row), 6) for e, row in zip(vc.eps_grid, vc.table, strict=True)
                },
                "rule": "mean over validation volumes of each volume's Dice (all slices of its block pooled, "
                "normal slices included), with the post-processing above; detect and the viewer apply these",
            }
            if vc.z is not None:
                log(_z_line(stem.name, vc.z))
                updates["chosen_volume"].update(_z_updates(vc.z))
                z_mm = vc.z.z_mm
    best_per_eps = {str(e): round(max(row), 6) for e, row in zip(choice.eps_grid, choice.table, strict=True)}
    if rng.grid != grid:
        rng.grid = grid
    return update_card(
        stem,
        {
            **updates,
            "eps_range": rng.as_dict(),
            "postprocess": {**choice.post, **({"z_mm": z_mm} if z_mm else {})},
            "chosen": {
                "eps": choice.eps,
                "tau": choice.tau,
                "tau_base": choice.base_tau,
                "val_dice": round(choice.dice, 6),
                "val_dice_base": round(choice.base_dice, 6),
                "peak_inside_grid": choice.peak_inside_grid,
                "binding_fraction": round(choice.binding_fraction.get(choice.eps, float("nan")), 4),
                "step_cap_fraction": round(choice.step_cap_fraction.get(choice.eps, float("nan")), 4),
                "mean_steps": round(choice.mean_steps.get(choice.eps, float("nan")), 1),
            },
            "calibration": {
                "data_dir": str(data_dir),
                "split": "val",
                "n_images": choice.n_images,
                "settings": {
                    **st.__dict__,
                    "channels_last": channels_last,
                    "layout_timing": layout_facts,
                    "solver_options": det.solver.__dict__,  # as run: fp32 without bfloat16 hardware
                },
                "best_val_dice_per_eps": best_per_eps,
                "mean_steps_per_eps": {str(k): round(v, 1) for k, v in choice.mean_steps.items()},
                "binding_fraction_per_eps": {str(k): round(v, 4) for k, v in choice.binding_fraction.items()},
                "step_cap_fraction_per_eps": {str(k): round(v, 4) for k, v in choice.step_cap_fraction.items()},
                "grid_extended": choice.grid_extended,
                "postprocess_choice": {
                    "rule": POST_RULES[post_source],
                    "on": post_source,
                    "grid": {k: list(v) for k, v in POST_GRID.items()} if st.postprocess else None,
                    "val_dice_per_variant": post_table if post_source == "volumes" else choice.post_table,
                },
                "seconds": {
                    "eps_range": round(t1 - t0, 1),
                    "choice": round(t2 - t1, 1),
                    "volumes": volume_seconds,
                },
                "rule": "tau_base: best mean per-image Dice at eps = 0; (eps, tau): best over eps > 0",
            },
        },
    )


def _z_line(name: str, zc) -> str:
    return (
        f"{name}: z window {zc.z_mm:g} mm ({zc.slices} slices) on {zc.n_volumes} validation volumes at eps {zc.eps:g}: "
        f"+MG Dice {zc.dice:.4f} (tau {zc.tau}), base {zc.base_dice:.4f} (tau {zc.base_tau}); per window "
        f"[+MG Dice, tau, base Dice, tau]: {zc.table}"
    )


def _z_updates(zc) -> dict[str, Any]:
    """The volume choice's figures at the chosen z window, and the window table."""
    return {
        "tau": zc.tau,
        "tau_base": zc.base_tau,
        "val_volume_dice": round(zc.dice, 6),
        "val_volume_dice_base": round(zc.base_dice, 6),
        "z_choice": {
            "z_mm": zc.z_mm,
            "slices": zc.slices,
            "eps": zc.eps,
            "per_window": zc.table,
            "rule": "D averaged over the axial slices of a z_mm window (postprocess.z_mm) after the in-plane "
            "post-processing; the window with the best mean +MG whole-volume Dice over the validation volumes at "
            "the chosen eps, tau re-chosen per window for base and +MG; ties go to the smaller window",
        },
    }


def calibrate_z(path, data_dir: str, z_grid_mm=Z_GRID_MM, device="cpu", log=print) -> dict[str, Any]:
    """Only the z-window stage, on a card whose whole-volume (eps, tau) is chosen already: the card's eps is held
    fixed, its solver and other post-processing applied as ``detect`` applies them; the window and the taus it
    needs are written into the card (``postprocess.z_mm``, ``chosen_volume``)."""
    from dataclasses import replace

    from app.core.detector import Detector
    from app.core.protocol import DEFAULT_TAUS, choose_z_on_volumes
    from app.data.splits import load_volumes
    from app.errors import OptionError
    from app.nets.card import card_choices

    stem = stem_of(path)
    model, card = load_checkpoint(stem, device)
    if not isinstance(card.get("chosen_volume"), dict):
        raise OptionError(f"{stem.name}: the card has no whole-volume choice; run calibrate without --z-only first")
    vols = load_volumes(data_dir, "val")
    det = Detector.from_card(model, card, device)
    det.post = replace(det.post, z_mm=0.0)
    eps = card_choices(card)["eps"]
    t0 = time.perf_counter()
    zc = choose_z_on_volumes(det, vols, eps, DEFAULT_TAUS, z_grid_mm)
    log(_z_line(stem.name, zc) + f" in {time.perf_counter() - t0:.0f} s")
    chosen = {**card["chosen_volume"], **_z_updates(zc)}
    chosen["z_choice"]["data_dir"] = str(data_dir)
    post = {k: v for k, v in (card.get("postprocess") or {}).items() if k != "z_mm"}
    if zc.z_mm:
        post["z_mm"] = zc.z_mm
    return update_card(stem, {"chosen_volume": chosen, "postprocess": post})


def calibrate_eps_area(path, data_dir: str, log=print) -> dict[str, Any]:
    """Scale eps by each slice's foreground area from now on (``eps_scaling`` in the card; docs/bench/eps-area/):
    the reference area is the median foreground area of the validation volumes' slices that have foreground, so
    the card's eps holds as it is where it was chosen. The card's eps and tau are not changed; run ``calibrate``
    again to choose them with the scaling applied."""
    from app.core.detector import foreground_area, has_foreground
    from app.data.splits import load_volumes
    from app.errors import OptionError

    stem = stem_of(path)
    read_card(stem)  # a missing or unreadable card fails here, before the volumes are read
    vols = load_volumes(data_dir, "val")
    x = vols.images.reshape(-1, *vols.images.shape[-3:])
    area = foreground_area(x[has_foreground(x)])
    if area.size == 0:
        raise OptionError(f"{data_dir}: the validation volumes hold no slice with foreground")
    ref = float(np.median(area))
    log(f"{stem.name}: eps scaled by sqrt(foreground area / {ref:g} px), the median over {area.size} validation "
        f"slices (their factors {np.sqrt(area.min() / ref):.2f}-{np.sqrt(area.max() / ref):.2f})")  # fmt: skip
    return update_card(stem, {"eps_scaling": {
        "reference_area_px": ref,
        "slices": int(area.size),
        "data_dir": str(data_dir),
        "rule": "each slice solved at eps * sqrt(its foreground pixels / reference_area_px): the same budget per "
        "foreground pixel on small and large sections; reference: the median over the validation volumes' slices",
    }})  # fmt: skip


def _validation_volumes(data_dir, log):
    """The validation split's whole volumes (``data brain-proxy`` builds them), or None with a note."""
    from app.errors import MatchGenError

    try:
        from app.data.splits import load_volumes
    except ImportError:  # pragma: no cover - an older tree
        return None
    try:
        return load_volumes(data_dir, "val")
    except MatchGenError as exc:
        log(f"no whole-volume choice: {exc}")
        return None


def _rounded(v: float, digits: int) -> float | None:
    """``v`` rounded, or None (JSON null) when it is not a finite number (no slice to measure it on)."""
    return round(v, digits) if math.isfinite(v) else None
