"""``bench quality``: does MatchGen help? The paper's Table 2 on a benchmark directory, for several models.

Per model: the eps range (from the model card if it has a calibrated one, else calibrated here on validation,
see :func:`app.core.protocol.calibrate_eps_range`); tau for the base model and (eps, tau) for +MG chosen on the
validation split by mean per-image Dice; then per-image Dice and pixel AP (mean and std over abnormal test
slices) and pooled Dice/AP on the test split. Beside the models: the intensity-threshold baseline, its tau chosen
on validation too. Nothing is chosen on test.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.detector import Detector, PostProcessing
from app.core.matchgen import FAST, SolverOptions
from app.core.metrics import paired_by_bins, paired_difference
from app.core.protocol import (
    DEFAULT_TAUS,
    POST_GRID,
    calibrate_eps_range,
    choose_intensity_baseline,
    choose_intensity_volume_tau,
    choose_on_validation,
    choose_on_volumes,
    evaluate_intensity_baseline,
    evaluate_on_test,
    evaluate_volumes,
    intensity_maps,
    intensity_volume_maps,
    per_kind_ap,
)
from app.errors import OptionError
from app.nets.card import (
    card_choices,
    card_eps_grid,
    card_training,
    card_validation_dice,
    has_choice,
)

#: lesion kinds of ``kinds.npy`` (1-based), as app.data.lesions.KINDS
KIND_NAMES = ("bright", "dark", "cavity", "foreign", "mirror")


@dataclass
class Benchmark:
    """What a benchmark folder holds: the annotated val and test slice splits, and where built, per-pixel lesion
    kinds, the second lesion style's test split (``test_b``) and whole volumes of each split."""

    val: Any
    test: Any
    kinds: dict[str, np.ndarray]  # split -> (N, S, S) uint8
    extra_tests: dict[str, Any]  # e.g. {"test_b": SliceSet}
    volumes: dict[str, Any]  # split -> volumes (images (R, Z, C, S, S), masks (R, Z, S, S))


def load_benchmark(data: str) -> Benchmark:
    from app.data import load_split
    from app.errors import MatchGenError

    val, test = load_split(data, "val"), load_split(data, "test")
    for split, ss in (("val", val), ("test", test)):
        if ss.masks is None:
            raise OptionError(f"{data}/{split} has no masks.npy: the protocol needs annotated val and test splits")
    extra: dict[str, Any] = {}
    if (Path(data) / "test_b" / "images.npy").is_file():
        extra["test_b"] = load_split(data, "test_b")
    kinds: dict[str, np.ndarray] = {}
    for split in ("val", "test", *extra):
        p = Path(data) / split / "kinds.npy"
        if p.is_file():
            kinds[split] = np.load(p, allow_pickle=False)
    volumes: dict[str, Any] = {}
    try:
        from app.data.splits import load_volumes
    except ImportError:  # pragma: no cover - a tree without volume support
        load_volumes = None
    if load_volumes is not None:
        for split in ("val", "test", *extra):
            try:
                volumes[split] = load_volumes(data, split)
            except MatchGenError:
                pass
    return Benchmark(val, test, kinds, extra, volumes)


@dataclass
class QualitySettings:
    val_subset: int | None = 64
    test_subset: int | None = None
    max_steps: int | None = None
    solver: SolverOptions = FAST
    channels_last: bool = True
    batch_size: int = 16
    calibrate_subset: int | None = 32
    recalibrate: bool = False
    #: "val": choose tau/eps on validation here; "card": take the choice the model card records (made on
    #: validation by ``python main.py calibrate`` with this module's protocol), which skips the validation solves
    choice: str = "val"


def _eps_grid_from_card(card: dict[str, Any]) -> list[float] | None:
    grid = card_eps_grid(card)
    return grid if len(grid) >= 2 else None


def _phases(progress: Callable[[str, int, int], None] | None):
    """``progress(phase, done, total)`` as a function of the phase giving ``(done, total)`` callbacks (or None)."""

    def prog(phase: str):
        return None if progress is None else (lambda d, t: progress(phase, d, t))

    return prog


def evaluate_model(
    name: str,
    val,
    test,
    settings: QualitySettings,
    device,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    bench: Benchmark | None = None,
) -> dict[str, Any]:
    """The protocol for one model; returns a JSON-ready dict. With a :class:`Benchmark`, also the second lesion
    style, the per-kind AP and whole-volume scores, at the same validation choices."""
    from app.core.ensemble import is_ensemble_file
    from app.nets.checkpoint import load_checkpoint
    from app.nets.zoo import resolve_model

    stem = resolve_model(name)
    if is_ensemble_file(stem.with_suffix(".json")):
        return evaluate_ensemble(stem, val, test, settings, device, progress=progress, bench=bench)
    model, card = load_checkpoint(stem, device)
    if settings.choice == "card":
        # apply the card's choice the way it was made (and the way detect and the viewer apply it): the card's
        # solver, step budget, layout and post-processing; --max-steps still overrides the budget
        det = Detector.from_card(model, card, device, batch_size=settings.batch_size)
    else:  # choose here with the benchmark's solver; the post-processing is chosen on validation below
        post = PostProcessing()
        det = Detector(
            model, device, solver=settings.solver, post=post, batch_size=settings.batch_size,
            channels_last=settings.channels_last,
        )  # fmt: skip

    prog = _phases(progress)
    t0 = time.perf_counter()
    grid = None if settings.recalibrate else _eps_grid_from_card(card)
    if settings.choice == "card" and grid is None:
        raise OptionError(f"model {stem.name}: its card has no calibrated eps range (run 'main.py calibrate')")
    eps_source = "model card"
    calib = None
    if grid is None:
        calib = calibrate_eps_range(
            det, val, subset=settings.calibrate_subset, max_steps=settings.max_steps, progress=prog("calibrate")
        )
        grid = calib.grid
        eps_source = "calibrated here on validation"
    if settings.choice == "card":
        if not has_choice(card):
            raise OptionError(f"model {stem.name}: its card records no validation choice (run 'main.py calibrate')")
        ch = card_choices(card, "slices")  # the paper's per-image choice (Table 2)
        choice_d = {
            "eps": ch["eps"],
            "tau": ch["tau"],
            "base_tau": ch["tau_base"],
            "dice": card_validation_dice(card)[0],
            "base_dice": card_validation_dice(card)[1],
            "source": "model card (chosen on validation by 'main.py calibrate')",
            "calibration_settings": card.get("calibration"),
        }
    else:
        choice = choose_on_validation(
            det,
            val,
            grid,
            DEFAULT_TAUS,
            subset=settings.val_subset,
            max_steps=settings.max_steps,
            progress=prog("validation"),
            post_grid=POST_GRID,
            extend=2,
        )
        choice_d = {**choice.as_dict(), "source": "chosen on validation here"}
        det.post = PostProcessing(det.post.foreground_threshold, **choice.post)
    calibration = calib.as_dict() if calib else card.get("eps_range")
    return _model_row(det, stem.name, model, card, val, test, settings, choice_d, prog, t0, bench=bench, grid=grid,
                      eps_source=eps_source, calibration=calibration)  # fmt: skip


def _test_rows(det, test, settings: QualitySettings, choice_d: dict[str, Any], prog) -> dict[str, Any]:
    """Base and + MG on the test slices at the validation choice, with what the report derives from them."""
    res_base: dict[str, float] = {}
    res_mg: dict[str, float] = {}
    keep_base: dict[str, Any] = {}
    keep_mg: dict[str, Any] = {}
    base = evaluate_on_test(
        det,
        test,
        0.0,
        choice_d["base_tau"],
        subset=settings.test_subset,
        progress=prog("test base"),
        residuals=res_base,
        keep=keep_base,
    )
    mg = evaluate_on_test(
        det,
        test,
        choice_d["eps"],
        choice_d["tau"],
        subset=settings.test_subset,
        max_steps=settings.max_steps,
        progress=prog("test +MG"),
        residuals=res_mg,
        keep=keep_mg,
    )
    return {
        "base": base,
        "mg": mg,
        "keep_base": keep_base,
        "keep_mg": keep_mg,
        "residuals": {"base": res_base, "mg": res_mg},
    }


def _model_row(
    det, name, model, card, val, test, settings, choice_d, prog, t0, *, bench, grid, eps_source, calibration, family=""
) -> dict[str, Any]:  # fmt: skip
    """One model's row of the report: test slices, the extra evaluations, the paired differences, provenance."""
    t = _test_rows(det, test, settings, choice_d, prog)
    base, mg, keep_mg = t["base"], t["mg"], t["keep_mg"]
    extra = _extra_evaluations(det, bench, card, choice_d, settings, base, mg, t["keep_base"], keep_mg, prog)
    styles_by_lesion_area = extra.pop("by_lesion_area", {})
    return {
        **extra,
        "postprocess": det.post.as_dict(),
        "model": name,
        "family": family or model.config.family,
        "latent": model.latent_description,
        "config": model.config.to_dict(),
        "eps_grid": grid,
        "eps_source": eps_source,
        "calibration": calibration,
        "choice": choice_d,
        "base": base.as_dict(),
        "mg": mg.as_dict(),
        "residuals": t["residuals"],
        "paired": {
            "dice": paired_difference(base.dice_per_image, mg.dice_per_image),
            "ap": paired_difference(base.ap_per_image, mg.ap_per_image),
        },
        "by_area": {
            "edges": list(AREA_EDGES),
            "dice": paired_by_bins(base.dice_per_image, mg.dice_per_image, _abnormal_areas(test, keep_mg), AREA_EDGES),
            "val_slices": _val_area_counts(val, det.post.foreground_threshold),
        },
        "by_lesion_area": {
            "edges": list(LESION_AREA_EDGES),
            "test": _lesion_area_entry(test, keep_mg, base, mg),
            **styles_by_lesion_area,
        },
        "solver": {**det.solver.__dict__, "channels_last": det.channels_last, "median_size": det.post.median_size},
        "seconds": time.perf_counter() - t0,
        "training": card_training(card),
    }


def evaluate_ensemble(
    stem: Path, val, test, settings: QualitySettings, device, *, progress=None, bench: Benchmark | None = None
) -> dict[str, Any]:
    """The protocol for an ensemble card (app.core.ensemble), run as ``detect`` runs it: every member at its card's
    whole-volume eps times the factor (1: + MG, 0: the base models), the card's post-processing. Its card records
    whole-volume choices only, so the per-image tau (base and + MG, the paper's unit) is chosen here on the
    validation slices, at eps factor 1, with the card's post-processing (never on test); whole volumes use the
    card's choice (``--choice card``) or one made here on the validation volumes."""
    from app.core.ensemble import load_detector

    det, model, card = load_detector(stem, str(device), batch_size=settings.batch_size)
    prog = _phases(progress)
    t0 = time.perf_counter()
    c = choose_on_validation(
        det,
        val,
        [1.0],
        DEFAULT_TAUS,
        subset=settings.val_subset,
        max_steps=settings.max_steps,
        progress=prog("validation"),
    )
    choice_d = {
        **c.as_dict(),
        "source": "chosen on validation here (an ensemble card records whole-volume choices "
        "only): tau per image at eps factor 1 (+ MG) and 0 (base), the card's post-processing",
    }
    members = ", ".join(f"{m.name} (eps {m.eps:.4g})" for m in det.members)
    source = f"ensemble card: a factor of each member's whole-volume eps ({members})"
    row = _model_row(det, stem.name, model, card, val, test, settings, choice_d, prog, t0, bench=bench, grid=[0.0, 1.0],
                     eps_source=source, calibration=card.get("eps_range"), family="ensemble")  # fmt: skip
    row["latent"] = f"ensemble of {members}; the first member's pseudo-normal"
    row["members"] = [m.name for m in det.members]
    return row


#: brain-area bins (foreground pixels of a slice at the benchmark's 128 px) of the per-area table: the validation
#: block holds almost only sections above 7,000 px, the test blocks mostly smaller ones, and on a small section
#: MatchGen can take a larger share of a lesion's residual away (docs/models.md, "eps scaled by the slice's brain
#: area")
AREA_EDGES = (0, 3000, 5000, 7000)


def _abnormal_areas(test_set, keep: dict[str, Any]) -> np.ndarray:
    """Foreground pixels of each abnormal test slice, in the order of the per-image scores."""
    masks = np.asarray(test_set.masks)[keep["idx"]]
    abnormal = masks.reshape(len(masks), -1).any(axis=1)
    fg = np.asarray(keep["foreground"], bool)[abnormal]
    return fg.reshape(len(fg), -1).sum(axis=1)


#: bins of the lesion's area on a slice (lesion pixels at the benchmark's 128 px; about 2 mm^2 each on the held-out
#: subject) of the per-lesion-area table: per-image Dice is an average over abnormal slices, most of which cut a lesion
#: near its edge or hold a small one; the paper's brain tumours cover thousands of pixels
LESION_AREA_EDGES = (1, 50, 200, 800)


def _abnormal_lesion_px(test_set, keep: dict[str, Any]) -> np.ndarray:
    """Lesion pixels of each abnormal test slice, in the order of the per-image scores."""
    masks = np.asarray(test_set.masks)[keep["idx"]]
    px = masks.reshape(len(masks), -1).astype(bool).sum(axis=1)
    return px[px > 0]


def _lesion_area_entry(test_set, keep: dict[str, Any], base, mg) -> dict[str, Any]:
    """Each abnormal slice's lesion pixels and the paired per-image Dice (base, + MG) by :data:`LESION_AREA_EDGES`."""
    px = _abnormal_lesion_px(test_set, keep)
    dice = paired_by_bins(base.dice_per_image, mg.dice_per_image, px, LESION_AREA_EDGES)
    return {"lesion_px": [int(v) for v in px], "dice": dice}


def _val_area_counts(val, threshold: float) -> list[int]:
    """How many abnormal validation slices (where eps and tau were chosen) fall in each brain-area bin."""
    from app.core.detector import foreground_area

    masks = np.asarray(val.masks)
    abnormal = masks.reshape(len(masks), -1).any(axis=1)
    area = foreground_area(np.asarray(val.images, np.float32)[abnormal], threshold)
    return [int(n) for n in np.histogram(area, bins=[*AREA_EDGES, math.inf])[0]]  # the bins of paired_by_bins


def _kind_breakdown(bench: Benchmark, split: str, test_set, keep: dict[str, Any]) -> dict[str, float | None] | None:
    kinds = bench.kinds.get(split)
    if kinds is None or not keep:
        return None
    idx = keep["idx"]
    return per_kind_ap(keep["maps"], np.asarray(test_set.masks)[idx], kinds[idx], keep["foreground"], KIND_NAMES)


def _extra_evaluations(det, bench, card, choice_d, settings, base, mg, keep_base, keep_mg, prog) -> dict[str, Any]:
    """Second lesion style, per-kind AP and whole volumes, at the choices made on validation (never on test)."""
    if bench is None:
        return {}
    out: dict[str, Any] = {"per_kind_ap": {}, "styles": {}, "volumes": {}, "by_lesion_area": {}}
    out["per_kind_ap"]["test"] = {
        "base": _kind_breakdown(bench, "test", bench.test, keep_base),
        "mg": _kind_breakdown(bench, "test", bench.test, keep_mg),
    }
    for split, ss in bench.extra_tests.items():
        kb: dict[str, Any] = {}
        km: dict[str, Any] = {}
        sb = evaluate_on_test(det, ss, 0.0, choice_d["base_tau"], subset=settings.test_subset, keep=kb)
        sm = evaluate_on_test(
            det, ss, choice_d["eps"], choice_d["tau"], subset=settings.test_subset, max_steps=settings.max_steps,
            keep=km, progress=prog(f"{split} +MG"),
        )  # fmt: skip
        out["styles"][split] = {"base": sb.as_dict(), "mg": sm.as_dict()}
        out["by_lesion_area"][split] = _lesion_area_entry(ss, km, sb, sm)
        out["per_kind_ap"][split] = {
            "base": _kind_breakdown(bench, split, ss, kb),
            "mg": _kind_breakdown(bench, split, ss, km),
        }
    if "val" in bench.volumes:
        if settings.choice == "card" and isinstance(card.get("chosen_volume"), dict):
            vc = {k: v for k, v in card_choices(card, "volume").items() if k in ("eps", "tau", "tau_base")}
            vc["source"] = "model card (chosen on validation volumes by 'main.py calibrate')"
        else:
            grid = sorted(set(choice_d.get("eps_grid") or [0.0, choice_d["eps"]]))
            c = choose_on_volumes(det, bench.volumes["val"], grid, max_steps=settings.max_steps)
            vc = {"eps": c.eps, "tau": c.tau, "tau_base": c.base_tau, "source": "chosen on validation volumes here"}
        out["volume_choice"] = vc
        for split, vols in bench.volumes.items():
            if split == "val":
                continue
            vb = evaluate_volumes(det, vols, 0.0, vc["tau_base"])
            vm = evaluate_volumes(det, vols, vc["eps"], vc["tau"], max_steps=settings.max_steps)
            # + MG - base over the same realisations (the unit detect and the viewer apply)
            paired = paired_difference(vb["volume_dice"], vm["volume_dice"])
            out["volumes"][split] = {"base": vb, "mg": vm, "paired": paired}
    return out


def baseline_extras(bench: Benchmark, tau: float, settings: QualitySettings) -> dict[str, Any]:
    """The intensity threshold on the second style, per kind, and on whole volumes (its volume tau chosen on the
    validation volumes), for the same comparison as the models."""
    from app.core.maps import foreground_mask
    from app.core.metrics import dice, fp_per_normal_slice

    out: dict[str, Any] = {"styles": {}, "per_kind_ap": {}, "volumes": {}}
    for split, ss in {"test": bench.test, **bench.extra_tests}.items():
        if split != "test":
            out["styles"][split] = evaluate_intensity_baseline(ss, tau, subset=settings.test_subset).as_dict()
        if split in bench.kinds:
            x = np.asarray(ss.images, np.float32)
            maps = intensity_maps(x)
            fg = foreground_mask(x.mean(axis=1))
            out["per_kind_ap"][split] = per_kind_ap(maps, np.asarray(ss.masks), bench.kinds[split], fg, KIND_NAMES)
    if "val" in bench.volumes:
        val_vols = bench.volumes["val"]
        vtau = choose_intensity_volume_tau(intensity_volume_maps(val_vols.images), val_vols.masks)
        out["volume_tau"] = vtau
        for split, vols in bench.volumes.items():
            if split == "val":
                continue
            pairs = list(zip(intensity_volume_maps(vols.images) > vtau, np.asarray(vols.masks), strict=True))
            dices = [dice(p, g) for p, g in pairs]
            out["volumes"][split] = {
                "volume_dice_mean": float(np.mean(dices)),
                "volume_dice": [round(float(d), 6) for d in dices],
                "fp_pixels_per_normal_slice": float(np.mean([fp_per_normal_slice(p, g) for p, g in pairs])),
            }
    return out


def run_quality(
    data: str,
    models: list[str],
    settings: QualitySettings,
    device: str = "cpu",
    *,
    log: Callable[[str], None] = print,
    progress_bar: bool = True,
) -> dict[str, Any]:
    from app.core.device import describe_device, resolve_device
    from app.data import data_layout

    if not models:
        raise OptionError("no models given (--models A,B,...)")
    dev = resolve_device(device)
    bench = load_benchmark(data)
    val, test = bench.val, bench.test
    bar = None
    if progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=len(models), unit="model", dynamic_ncols=True)

    def progress(phase: str, done: int, total: int) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{phase} {done}/{total}", refresh=True)

    pb_sets = settings.val_subset
    base_choice = choose_intensity_baseline(val, DEFAULT_TAUS, subset=pb_sets)
    base_scores = evaluate_intensity_baseline(test, base_choice.tau, subset=settings.test_subset)
    rows = []
    for name in models:
        if bar is not None:
            bar.set_description(name)
        rows.append(evaluate_model(name, val, test, settings, dev, progress=progress, bench=bench))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {
        "data": str(data),
        "data_layout": data_layout(data),
        "device": describe_device(dev),
        "settings": {k: (v.__dict__ if isinstance(v, SolverOptions) else v) for k, v in settings.__dict__.items()},
        "n_val_abnormal": int(val.masks.reshape(len(val), -1).any(axis=1).sum()),
        "n_test": len(test),
        "n_test_abnormal": int(test.masks.reshape(len(test), -1).any(axis=1).sum()),
        "intensity_baseline": {
            "choice": base_choice.as_dict(),
            "test": base_scores.as_dict(),
            **baseline_extras(bench, base_choice.tau, settings),
        },
        "models": rows,
    }


def _pm(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _pct(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def table_markdown(report: dict[str, Any]) -> str:
    """A Table-2-shaped markdown table: one row per method (base and +MG), Dice and AP in percent."""
    lines = [
        "| method | Dice (per image) | AP (per image) | pooled Dice | pooled AP | tau | eps | val Dice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ib = report["intensity_baseline"]
    s = ib["test"]
    lines.append(
        f"| intensity threshold | {_pm(s['dice_mean'], s['dice_std'])} | {_pm(s['ap_mean'], s['ap_std'])} | "
        f"{_pct(s['pooled_dice'])} | {_pct(s['pooled_ap'])} | {ib['choice']['tau']:.3f} | - | "
        f"{_pct(ib['choice']['dice'])} |"
    )
    for r in report["models"]:
        c = r["choice"]
        for label, sc, tau, eps, vd in (
            (r["model"], r["base"], c["base_tau"], None, c["base_dice"]),
            (f"{r['model']} + MG", r["mg"], c["tau"], c["eps"], c["dice"]),
        ):
            better = ""
            if eps is not None and sc["dice_mean"] > r["base"]["dice_mean"]:
                better = " ↑"
            lines.append(
                f"| {label} | {_pm(sc['dice_mean'], sc['dice_std'])}{better} | {_pm(sc['ap_mean'], sc['ap_std'])} | "
                f"{_pct(sc['pooled_dice'])} | {_pct(sc['pooled_ap'])} | {tau:.3f} | "
                f"{'-' if eps is None else f'{eps:.4g}'} | {_pct(vd)} |"
            )
    return "\n".join(lines) + "\n"


def residual_markdown(report: dict[str, Any]) -> str:
    """Why +MG helps or not: mean anomaly-map value on lesion pixels and on normal foreground of the abnormal test
    slices, base -> +MG, and their ratio (see :func:`app.core.protocol.residual_means`)."""
    lines = [
        "Paired per-image differences (+MG - base, abnormal test slices, percentage points; 95 % bootstrap "
        "interval) and residuals (mean map value, base -> +MG). +MG helps when the tissue residual falls faster "
        "than the lesion residual, i.e. when the lesion/tissue ratio grows.",
        "",
        "| model | eps | Δ Dice [95 % CI] | +MG better / worse / same | Δ AP [95 % CI] | lesion | normal tissue "
        "| lesion / tissue |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def delta(p: dict | None) -> str:
        if not p or p.get("n", 0) == 0:
            return "n/a"
        lo, hi = p["ci95"]
        return f"{100 * p['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"

    def f(v) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    for r in report["models"]:
        rb, rm = (r.get("residuals") or {}).get("base") or {}, (r.get("residuals") or {}).get("mg") or {}
        cells = [f"{f(rb.get(k))} -> {f(rm.get(k))}" for k in ("lesion_residual", "tissue_residual", "contrast")]
        pd, pa = (r.get("paired") or {}).get("dice"), (r.get("paired") or {}).get("ap")
        wl = f"{pd['wins']} / {pd['losses']} / {pd['ties']}" if pd else "n/a"
        lines.append(
            f"| {r['model']} | {r['choice']['eps']:.4g} | {delta(pd)} | {wl} | {delta(pa)} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def area_markdown(report: dict[str, Any]) -> str:
    """Per-image Dice of base and +MG, and their paired difference, by the slice's brain area."""
    rows = [r for r in report["models"] if (r.get("by_area") or {}).get("dice")]
    if not rows:
        return ""
    lines = [
        "Per-image Dice by the slice's brain area (foreground pixels; abnormal test slices; +MG - base in percentage "
        "points with its 95 % bootstrap interval), beside how many abnormal validation slices (where eps and tau were "
        "chosen) have that area.",
        "",
        "| model | brain px | validation slices | test slices | Dice base | Dice + MG | Δ Dice [95 % CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        val = r["by_area"].get("val_slices") or []
        for i, b in enumerate(r["by_area"]["dice"]):
            span = f"{b['lo']:,.0f}-{b['hi']:,.0f}" if b["hi"] is not None else f">= {b['lo']:,.0f}"
            nv = str(val[i]) if i < len(val) else "n/a"
            if b["n"] == 0:
                lines.append(f"| {r['model']} | {span} | {nv} | 0 | - | - | - |")
                continue
            lo, hi = b["ci95"]
            lines.append(
                f"| {r['model']} | {span} | {nv} | {b['n']} | {_pct(b['a_mean'])} | {_pct(b['b_mean'])} | "
                f"{100 * b['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] |"
            )
    return "\n".join(lines) + "\n"


def lesion_area_markdown(report: dict[str, Any]) -> str:
    """Per-image Dice of the intensity threshold, base and +MG by the lesion's area on the slice, with +MG - base,
    for the test split and each other lesion style."""
    rows = [r for r in report["models"] if (r.get("by_lesion_area") or {}).get("test")]
    if not rows:
        return ""
    ib = report["intensity_baseline"]
    lines = [
        "Per-image Dice by the lesion's area on the slice (lesion pixels at the benchmark's 128 px; abnormal slices; "
        "+MG - base in percentage points with its 95 % bootstrap interval). Each split's per-image mean is the mean "
        "of its bins weighted by their slices.",
        "",
        "| model | split | lesion px | slices | Dice intensity threshold | Dice base | Dice + MG | Δ Dice [95 % CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for split, entry in r["by_lesion_area"].items():
            if split == "edges":
                continue
            scores = ib.get("test") if split == "test" else (ib.get("styles") or {}).get(split)
            thr = np.asarray((scores or {}).get("dice_per_image") or [], np.float64)
            px = np.asarray(entry["lesion_px"], np.int64)
            same = thr.shape == px.shape  # the threshold scored the same slices (the same test subset)
            for b in entry["dice"]:
                span = f"{b['lo']:,.0f}-{b['hi'] - 1:,.0f}" if b["hi"] is not None else f">= {b['lo']:,.0f}"
                if b["n"] == 0:
                    lines.append(f"| {r['model']} | {split} | {span} | 0 | - | - | - | - |")
                    continue
                sel = (px >= b["lo"]) & (px < b["hi"]) if b["hi"] is not None else px >= b["lo"]
                t = _pct(float(thr[sel].mean())) if same and sel.any() else "n/a"
                lo, hi = b["ci95"]
                lines.append(
                    f"| {r['model']} | {split} | {span} | {b['n']} | {t} | {_pct(b['a_mean'])} | {_pct(b['b_mean'])} | "
                    f"{100 * b['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] |"
                )
    return "\n".join(lines) + "\n"


def extras_markdown(report: dict[str, Any]) -> str:
    """The second lesion style, per-kind AP and whole-volume scores (base -> +MG), beside the intensity
    threshold; empty when the benchmark folder has none of them."""
    ib = report["intensity_baseline"]
    rows = report["models"]
    parts: list[str] = []
    styles = sorted({k for r in rows for k in (r.get("styles") or {})})
    for split in styles:
        b = (ib.get("styles") or {}).get(split) or {}
        lines = [
            f"### Second lesion style ({split}: generated differently from the validation lesions; same choices)",
            "",
            "| method | Dice (per image) | pooled Dice | pooled AP |",
            "|---|---|---|---|",
            f"| intensity threshold | {_pm(b.get('dice_mean'), b.get('dice_std'))} | {_pct(b.get('pooled_dice'))} "
            f"| {_pct(b.get('pooled_ap'))} |",
        ]
        for r in rows:
            st = (r.get("styles") or {}).get(split)
            if not st:
                continue
            for label, sc in ((r["model"], st["base"]), (f"{r['model']} + MG", st["mg"])):
                lines.append(
                    f"| {label} | {_pm(sc['dice_mean'], sc['dice_std'])} | {_pct(sc['pooled_dice'])} | "
                    f"{_pct(sc['pooled_ap'])} |"
                )
        parts.append("\n".join(lines) + "\n")
    kind_splits = sorted(
        {
            k
            for r in rows
            for k, v in (r.get("per_kind_ap") or {}).items()
            if any(x is not None for part in v.values() for x in (part or {}).values())
        }
    )
    for split in kind_splits:
        base_k = (ib.get("per_kind_ap") or {}).get(split) or {}
        lines = [
            f"### Pooled pixel AP per lesion kind ({split}; positives: that kind's pixels, negatives: normal tissue)",
            "",
            "| method | " + " | ".join(KIND_NAMES) + " |",
            "|---|" + "---|" * len(KIND_NAMES),
            "| image brightness | " + " | ".join(_pct(base_k.get(k)) for k in KIND_NAMES) + " |",
        ]
        for r in rows:
            pk = (r.get("per_kind_ap") or {}).get(split) or {}
            for label, part in ((r["model"], "base"), (f"{r['model']} + MG", "mg")):
                vals = pk.get(part) or {}
                lines.append(f"| {label} | " + " | ".join(_pct(vals.get(k)) for k in KIND_NAMES) + " |")
        parts.append("\n".join(lines) + "\n")
    vol_splits = sorted({k for r in rows for k in (r.get("volumes") or {})})
    for split in vol_splits:
        bv = (ib.get("volumes") or {}).get(split) or {}
        lines = [
            f"### Whole volumes ({split}: every slice of each lesion realisation's block, normal slices included; "
            "tau and eps chosen on the validation volumes)",
            "",
            "| method | volume Dice (mean) | + MG - base, paired [95 %] | per volume | false-positive pixels per "
            "normal slice | tau | eps |",
            "|---|---|---|---|---|---|---|",
            f"| intensity threshold | {_pct(bv.get('volume_dice_mean'))} | | "
            f"{', '.join(_pct(v) for v in bv.get('volume_dice', []))} | "
            f"{bv.get('fp_pixels_per_normal_slice', float('nan')):.1f} | "
            f"{ib.get('volume_tau', float('nan')):.3f} | - |",
        ]
        for r in rows:
            v = (r.get("volumes") or {}).get(split)
            if not v:
                continue
            vc = r.get("volume_choice") or {}
            for label, part, tau, eps in (
                (r["model"], "base", vc.get("tau_base"), None),
                (f"{r['model']} + MG", "mg", vc.get("tau"), vc.get("eps")),
            ):
                sc = v[part]
                pd = v.get("paired") if part == "mg" else None
                delta = (
                    f"{100 * pd['mean']:+.1f} [{100 * pd['ci95'][0]:+.1f}, {100 * pd['ci95'][1]:+.1f}]"
                    if pd and pd.get("n")
                    else ""
                )
                lines.append(
                    f"| {label} | {_pct(sc['volume_dice_mean'])} | {delta} | "
                    f"{', '.join(_pct(x) for x in sc['volume_dice'])} | "
                    f"{sc['fp_pixels_per_normal_slice']:.1f} | {tau:.3f} | {'-' if eps is None else f'{eps:.4g}'} |"
                )
        parts.append("\n".join(lines) + "\n")
    post = [f"{r['model']}: {r.get('postprocess')}" for r in rows if r.get("postprocess")]
    if post:
        card = (report.get("settings") or {}).get("choice") == "card"
        source = "each model's card" if card else "chosen here on the base model's validation maps"
        parts.append(
            "Post-processing (median filter size / foreground erosion px / minimum component px / z window mm, the "
            f"window for whole volumes only), the same for base and +MG, {source}: " + "; ".join(post) + ".\n"
        )
    return "\n".join(parts)


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in report["models"]]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.4 * len(names) + 2), 3.6), constrained_layout=True)
    ib = report["intensity_baseline"]["test"]
    for ax, key, title in ((axes[0], "dice", "Dice (per image, test)"), (axes[1], "ap", "AP (per image, test)")):
        top = 100 * ib[f"{key}_mean"]
        for off, part, label, colour in ((-0.2, "base", "base", "#9aa5b1"), (0.2, "mg", "+MG", "#d1495b")):
            m = [100 * r[part][f"{key}_mean"] for r in report["models"]]
            sd = [100 * r[part][f"{key}_std"] for r in report["models"]]
            ax.bar(x + off, m, 0.4, yerr=sd, capsize=2, label=label, color=colour)
            top = max([top, *(a + b for a, b in zip(m, sd, strict=True) if np.isfinite(a + b))])
        ax.axhline(100 * ib[f"{key}_mean"], color="#2e86ab", ls="--", lw=1, label="intensity threshold")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(title)
        ax.set_ylabel("%")
        ax.set_ylim(0, min(100.0, 1.1 * top) if np.isfinite(top) and top > 0 else 100.0)  # small scores stay readable
    axes[0].legend(fontsize=8)
    from app.atomic import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120))
    plt.close(fig)
    return path


def write_outputs(report: dict[str, Any], out: Path, command: str = "") -> dict[str, Path]:
    from app.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "quality.json", "md": out / "quality.md", "png": out / "quality.png"}
    text = json.dumps({**report, "command": command}, indent=2, default=float) + "\n"
    atomic_write_text(paths["json"], text)
    md = (
        f"# bench quality on {report['data']}\n\n"
        + (f"Command: `{command}`\n\n" if command else "")
        + (f"Layout of the held-out subject's slices: {lay}.\n\n" if (lay := report.get("data_layout")) else "")
        + f"Test: {report['n_test']} slices ({report['n_test_abnormal']} abnormal)"
        + (f", of which {ts} evenly spaced slices were used" if (ts := report["settings"].get("test_subset")) else "")
        + f"; validation: {report['n_val_abnormal']} abnormal slices"
        + (
            f" ({vs} evenly spaced used for the choice)"
            if (vs := report["settings"].get("val_subset")) and report["settings"].get("choice") == "val"
            else " (the choice recorded in each model card by `main.py calibrate`)"
            if report["settings"].get("choice") == "card"
            else ""
        )
        + ". Dice/AP in %, per-image mean ± std over abnormal test "
        "slices; tau (and eps for +MG) chosen on validation by mean Dice. ↑: +MG beats its base model.\n\n"
        + table_markdown(report)
        + "\n"
        + residual_markdown(report)
        + "\n"
        + (f"{am}\n" if (am := area_markdown(report)) else "")
        + (f"{lm}\n" if (lm := lesion_area_markdown(report)) else "")
        + extras_markdown(report)
    )
    atomic_write_text(paths["md"], md)
    plot(report, paths["png"])
    return paths
