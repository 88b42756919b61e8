"""The paper's evaluation protocol, through the shared :class:`~app.core.detector.Detector` (so base and +MG get
identical post-processing) and :mod:`app.core.metrics`:

1. :func:`calibrate_eps_range` -- a model's eps range from validation data (the latent scale differs per model;
   the paper's [0, 0.6] is for its own models).
2. :func:`choose_on_validation` -- tau for the base model, and (eps, tau) for +MG, by mean per-image Dice over
   the abnormal validation images; the full Dice table comes with the choice.
3. :func:`evaluate_on_test` -- the scores of the chosen (eps, tau) on the test split (chosen on validation only).
4. :func:`choose_intensity_baseline` / :func:`evaluate_intensity_baseline` -- a plain threshold on the image
   itself inside the foreground, chosen on validation the same way.

Data: anything with ``images`` (N, C, S, S) in [0, 1] and ``masks`` (N, S, S) (an ``app.data.SliceSet``), or an
``(images, masks)`` pair. ``subset=n`` keeps the cost down (7 models on 2 cores): n slices at evenly spaced
positions -- among the *abnormal* slices for validation (only they enter the mean per-image Dice), among all
slices for test (so the pooled scores still see normal tissue). ``max_steps`` caps the solver per eps.

Every eps is solved from a cold start (z_o), exactly as ``detect``, the viewer and :func:`evaluate_on_test` apply
the chosen eps: a warm-started eps path would choose eps on a different operator whenever the step budget stops
the solver short of convergence. The (slice, eps) pairs are solved together in batches with one eps per image,
which costs no more than the path and keeps every solve independent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from app.core.detector import Detector, PostProcessing
from app.core.maps import foreground_mask, postprocess, z_window_slices
from app.core.metrics import (
    Scores,
    average_precision,
    dice,
    dice_table,
    dice_tables,
    evaluate,
    fp_per_normal_slice,
    mean_dice_per_tau,
)
from app.errors import OptionError

#: the default tau grid: [0, 1] in steps of 0.005 (difference maps of trained models sit mostly below 0.3)
DEFAULT_TAUS: tuple[float, ...] = tuple(float(t) for t in np.round(np.linspace(0.0, 1.0, 201), 4))

Progress = Callable[[int, int], None]


# --- data ------------------------------------------------------------------------------------------------------
def _arrays(data: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(data, tuple | list) and len(data) == 2:
        images, masks = data
    else:
        images, masks = getattr(data, "images", None), getattr(data, "masks", None)
    if images is None:
        raise OptionError("the slice set has no images")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise OptionError(f"images must be (N, C, S, S), got shape {images.shape}")
    if masks is not None:
        masks = np.asarray(masks).astype(bool)
        if masks.shape != (images.shape[0], *images.shape[2:]):
            raise OptionError(f"masks {masks.shape} do not match images {images.shape}")
    return images, masks


def subset_indices(masks: np.ndarray | None, n: int | None, n_total: int, *, abnormal_only: bool) -> np.ndarray:
    """Indices of ``n`` slices at evenly spaced positions (all slices when ``n`` is None or large enough).
    With ``abnormal_only`` only slices with a non-empty mask are candidates."""
    cand = np.arange(n_total)
    if abnormal_only and masks is not None:
        cand = cand[masks.reshape(n_total, -1).any(axis=1)]
    if n is None or n >= cand.size:
        return cand
    if n < 1:
        raise OptionError("subset must be >= 1")
    pos = np.round(np.linspace(0, cand.size - 1, n)).astype(int)
    return cand[np.unique(pos)]


def _need_masks(masks: np.ndarray | None, what: str) -> np.ndarray:
    if masks is None:
        raise OptionError(f"{what} needs ground-truth masks (an annotated split)")
    if not masks.any():
        raise OptionError(f"{what} needs at least one abnormal slice (all masks are empty)")
    return masks


# --- maps for a grid of eps ------------------------------------------------------------------------------------
@dataclass
class PathMaps:
    """Post-processed anomaly maps for each eps, plus what the solver did (each eps a cold start)."""

    maps: dict[float, np.ndarray]  # eps -> (N, S, S)
    steps: dict[float, np.ndarray]  # eps -> (N,) solver steps
    loss: dict[float, np.ndarray]  # eps -> (N,) final mean |x - s|
    distance: dict[float, np.ndarray]  # eps -> (N,) ||z - z0|| (over the slice's eps factor: in units of eps)
    seconds: float = 0.0
    foreground: np.ndarray | None = None  # (N, S, S); with ``raw=True`` the maps are not post-processed


def compute_maps(
    detector: Detector,
    images: np.ndarray,
    eps_values: Sequence[float],
    *,
    max_steps: int | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    raw: bool = False,
    **overrides,
) -> PathMaps:
    """Maps of ``images`` (N, C, S, S) at every eps (eps = 0 is the base model). Each (slice, eps) pair is a cold
    start from z_o; pairs are batched ``detector.batch_size`` at a time with per-image eps (the solver keeps
    per-image state, so a pair's answer does not depend on its batch mates). ``progress(done, total)`` counts
    pairs. ``raw=True`` keeps the model's maps before post-processing (and returns the foreground), so that
    post-processing variants can be compared on the same solves."""
    eps_sorted = sorted({float(e) for e in eps_values})
    if not eps_sorted:
        raise OptionError("no eps values given")
    if any(e < 0 or not math.isfinite(e) for e in eps_sorted):
        raise OptionError("eps values must be finite and >= 0")
    if max_steps is not None:
        overrides["max_steps"] = int(max_steps)
    x_all, _ = _arrays((images, None))
    n, n_eps = x_all.shape[0], len(eps_sorted)
    S = x_all.shape[2:]
    maps = np.zeros((n_eps, n, *S), np.float32)
    steps = np.zeros((n_eps, n), np.int64)
    loss = np.zeros((n_eps, n), np.float32)
    dist = np.zeros((n_eps, n), np.float32)
    # pairs image-major: a batch holds the eps rows of a few images; one batch loop for everything (Detector.run)
    img_of = np.repeat(np.arange(n), n_eps)
    eps_of = np.tile(np.arange(n_eps), n)
    eps_arr = np.asarray(eps_sorted, np.float32)
    t0 = time.perf_counter()
    out = detector.run(
        x_all[img_of], eps_arr[eps_of], progress=progress, should_stop=should_stop, raw=raw, **overrides
    )
    fg_all = np.zeros((n, *S), bool)
    fg_all[img_of] = out.foreground
    maps[eps_of, img_of] = out.d
    steps[eps_of, img_of] = out.steps
    loss[eps_of, img_of] = out.loss
    dist[eps_of, img_of] = out.distance / out.eps_factor  # in units of the eps given (eps_reference_area)
    row = {e: i for i, e in enumerate(eps_sorted)}
    return PathMaps(
        {e: maps[i] for e, i in row.items()},
        {e: steps[i] for e, i in row.items()},
        {e: loss[i] for e, i in row.items()},
        {e: dist[i] for e, i in row.items()},
        time.perf_counter() - t0,
        fg_all,
    )


# --- eps range -------------------------------------------------------------------------------------------------
@dataclass
class EpsRange:
    """A model's eps range and how it was derived (stored in the model card)."""

    eps_max: float
    grid: list[float]
    rule: str
    quantile: float
    distances: list[float]  # ||z_unconstrained - z0|| per validation slice used
    z0_spread: float  # median ||z0 - mean(z0)|| over the same slices: the latent scale, for reference
    n_images: int

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["distances"] = [round(float(v), 6) for v in self.distances]
        return d


CALIBRATION_RULE = (
    "eps_max = the {q:.0%} quantile over abnormal validation slices of ||z_free - z_o||, where z_free is the "
    "solver's unconstrained optimum (eps = inf) within its step budget; beyond it the constraint stops binding "
    "for most slices, so larger eps only re-admits the anomaly. Grid: {n} evenly spaced values in [0, eps_max], "
    "eps_max rounded to 2 significant digits, plus {fine} halvings of the first step (a finer look near 0, where "
    "models whose decoder can copy a lesion need their eps)."
)


def _round_sig(v: float, digits: int = 2) -> float:
    if v <= 0 or not math.isfinite(v):
        return float(v)
    return float(round(v, digits - 1 - int(math.floor(math.log10(v)))))


def eps_grid(eps_max: float, n_grid: int = 7, n_fine: int = 3) -> list[float]:
    """0, ``n_grid - 1`` even steps up to ``eps_max``, and ``n_fine`` halvings of the first step, sorted."""
    step = eps_max / (n_grid - 1)
    vals = {*np.linspace(0.0, eps_max, n_grid), *(step / 2**k for k in range(1, n_fine + 1))}
    return sorted({float(v) for v in np.round(sorted(vals), 6)})


def calibrate_eps_range(
    detector: Detector,
    val_set: Any,
    *,
    subset: int | None = 32,
    quantile: float = 0.9,
    n_grid: int = 7,
    n_fine: int = 3,
    max_steps: int | None = None,
    progress: Progress | None = None,
    **overrides,
) -> EpsRange:
    """Derive a model's eps range from validation slices (see :data:`CALIBRATION_RULE`)."""
    if not (0 < quantile <= 1) or n_grid < 2 or n_fine < 0:
        raise OptionError("quantile must be in (0, 1], n_grid >= 2 and n_fine >= 0")
    images, masks = _arrays(val_set)
    idx = subset_indices(masks, subset, images.shape[0], abnormal_only=True)
    x = images[idx]
    free = 1e6  # no finite ball binds: the penalty term never activates
    pm = compute_maps(detector, x, [free], max_steps=max_steps, progress=progress, **overrides)
    dist = pm.distance[free].astype(np.float64)
    with torch.no_grad():
        z0 = torch.cat(
            [
                detector.model.encode(torch.from_numpy(x[i : i + detector.batch_size]).to(detector.device))
                for i in range(0, len(x), detector.batch_size)
            ]
        )
    zf = z0.flatten(1).double()
    spread = float((zf - zf.mean(dim=0)).norm(dim=1).median()) if len(zf) > 1 else 0.0
    eps_max = _round_sig(float(np.quantile(dist, quantile)))
    if not eps_max > 0:
        raise OptionError(
            "eps calibration failed: the unconstrained solver did not move away from z_o on any validation slice "
            "(max_steps too small, or a decoder that ignores z)"
        )
    grid = eps_grid(eps_max, n_grid, n_fine)
    return EpsRange(
        eps_max=eps_max,
        grid=grid,
        rule=CALIBRATION_RULE.format(q=quantile, n=n_grid, fine=n_fine),
        quantile=quantile,
        distances=dist.tolist(),
        z0_spread=spread,
        n_images=len(idx),
    )


# --- choosing on validation ------------------------------------------------------------------------------------
@dataclass
class Choice:
    """What validation chose. ``table[i][j]`` is the mean validation Dice at ``eps_grid[i]``, ``tau_grid[j]``;
    the eps = 0 row is the base model. +MG's eps is chosen among the eps > 0 values only, so a +MG result is
    always a MatchGen result (it can lose to the base model on validation, and the report then shows that)."""

    eps: float
    tau: float
    dice: float
    base_tau: float
    base_dice: float
    eps_grid: list[float]
    tau_grid: list[float]
    table: list[list[float]]
    n_images: int
    mean_steps: dict[float, float] = field(default_factory=dict)
    seconds: float = 0.0
    #: post-processing chosen on the base model's validation maps and applied to base and +MG alike
    post: dict[str, int] = field(default_factory=dict)
    #: best base-model validation Dice per post-processing variant ("median/erode/min_component")
    post_table: dict[str, float] = field(default_factory=dict)
    #: per eps: fraction of images whose solution lies on the eps-sphere (the constraint binds) and fraction
    #: that used up the step budget
    binding_fraction: dict[float, float] = field(default_factory=dict)
    step_cap_fraction: dict[float, float] = field(default_factory=dict)
    #: False when +MG's best eps is the largest of the (extended) grid: the curve did not peak inside it
    peak_inside_grid: bool = True
    grid_extended: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("mean_steps", "binding_fraction", "step_cap_fraction"):
            d[k] = {str(e): v for e, v in getattr(self, k).items()}
        return d


#: post-processing variants searched on validation: median filter size, foreground erosion (px), minimum
#: component size (px) -- the choices of Kascenas et al. 2022 and Baur et al. 2021, at 128 x 128
POST_GRID: dict[str, tuple[int, ...]] = {
    "median_size": (0, 3, 5, 7),
    "erode_px": (0, 2, 4, 6, 8),
    "min_component_px": (0, 10, 30, 60, 100),
}


def _tau_array(tau_grid: Sequence[float]) -> np.ndarray:
    """A tau grid as the sorted float64 array every choice scores against (ties go to its smaller values)."""
    return np.asarray(sorted(float(t) for t in tau_grid), dtype=np.float64)


def _post_key(p: PostProcessing) -> str:
    return f"{p.median_size}/{p.erode_px}/{p.min_component_px}"


def choose_postprocessing(
    raw_maps: np.ndarray,
    foreground: np.ndarray,
    gts: Sequence[np.ndarray],
    taus: np.ndarray,
    grid: dict[str, Sequence[int]] = POST_GRID,
    foreground_threshold: float = 0.01,
) -> tuple[PostProcessing, dict[str, float]]:
    """The post-processing with the best mean Dice (at its best tau) of the *base* model's raw maps (N, S, S):
    per image on abnormal validation slices when ``gts`` are (S, S) masks, per whole volume when they are (Z, S, S)
    volumes (the maps then hold the volumes' slices in order, N = len(gts) * Z). Ties go to the simpler variant
    (smaller values, in grid order)."""
    best: tuple[float, PostProcessing] | None = None
    table: dict[str, float] = {}
    unit_shape = np.shape(gts[0])
    for med in sorted(grid.get("median_size", (0,))):
        for ero in sorted(grid.get("erode_px", (0,))):
            maps = PostProcessing(foreground_threshold, med, ero).apply(raw_maps, foreground)
            units = list(maps.reshape(len(gts), *unit_shape))
            sizes = sorted(grid.get("min_component_px", (0,)))
            for mc, row in zip(sizes, dice_tables(units, list(gts), taus, sizes), strict=True):
                post = PostProcessing(foreground_threshold, med, ero, mc)
                _, dsc = _best(row, taus)
                table[_post_key(post)] = round(float(dsc), 6)
                if best is None or np.nan_to_num(dsc, nan=-1.0) > best[0]:
                    best = (float(np.nan_to_num(dsc, nan=-1.0)), post)
    assert best is not None
    return best[1], table


def _best(row: np.ndarray, taus: np.ndarray) -> tuple[float, float]:
    """Highest Dice in a row; ties go to the smaller tau."""
    r = np.nan_to_num(row, nan=-1.0)
    j = int(np.argmax(r))
    return float(taus[j]), float(row[j])


def _best_mg(rows: dict[float, np.ndarray], taus: np.ndarray) -> tuple[float, float, float]:
    """(Dice, eps, tau) of the best +MG row (eps > 0); ties go to the smaller eps, then the smaller tau."""
    best = (-2.0, 0.0, 0.0)
    for e in sorted(rows):
        if e <= 0:
            continue
        t, dsc = _best(rows[e], taus)
        if np.nan_to_num(dsc, nan=-1.0) > best[0]:
            best = (float(dsc), e, t)
    return best


def _step_cap(detector: Detector, max_steps: int | None, overrides: dict) -> int:
    """The step budget the solves ran with (the argument, an override, else the detector's solver)."""
    return int(max_steps or overrides.get("max_steps") or detector.solver.max_steps)


def solver_facts(steps: np.ndarray, distance: np.ndarray, eps: float, cap: int) -> tuple[float, float, float]:
    """How the solver fared at ``eps`` over some solves: the fraction whose solution lies on the eps-sphere
    (the constraint binds), the fraction that used up the step budget ``cap``, and the mean steps. eps = 0 is
    the base model (binds by definition, no steps); no solves at all gives NaNs."""
    if steps.size == 0:
        return float("nan"), float("nan"), float("nan")
    if eps <= 0:
        return 1.0, 0.0, float(steps.mean())
    return float((distance >= 0.99 * eps).mean()), float((steps >= cap).mean()), float(steps.mean())


def choose_on_validation(
    detector: Detector,
    val_set: Any,
    eps_grid: Sequence[float],
    tau_grid: Sequence[float] = DEFAULT_TAUS,
    *,
    subset: int | None = None,
    max_steps: int | None = None,
    progress: Progress | None = None,
    post_grid: dict[str, Sequence[int]] | None = None,
    extend: int = 0,
    **overrides,
) -> Choice:
    """tau for the base model and (eps, tau) for +MG by mean per-image Dice over abnormal validation slices.
    Ties go to the smaller eps, then the smaller tau.

    ``post_grid`` (e.g. :data:`POST_GRID`): first choose the post-processing on the base model's maps
    (:func:`choose_postprocessing`), then hold it fixed for every eps, so base and +MG are post-processed alike;
    without it the detector's own post-processing is used. ``extend``: while +MG's best eps is the largest of the
    grid, add 1.5x, 2x and 3x that value (at most ``extend`` times), so the validation curve can peak inside."""
    images, masks = _arrays(val_set)
    masks = _need_masks(masks, "choosing eps and tau")
    idx = subset_indices(masks, subset, images.shape[0], abnormal_only=True)
    eps_all = sorted({0.0, *(float(e) for e in eps_grid)})
    if len(eps_all) < 2:
        raise OptionError("the eps grid needs at least one value > 0 for +MG")
    taus = _tau_array(tau_grid)
    if taus.size == 0:
        raise OptionError("empty tau grid")
    gts = list(masks[idx])
    x = images[idx]
    pm = compute_maps(detector, x, eps_all, max_steps=max_steps, progress=progress, raw=True, **overrides)
    if post_grid:
        post, post_table = choose_postprocessing(
            pm.maps[0.0], pm.foreground, gts, taus, post_grid, detector.post.foreground_threshold
        )
    else:
        post, post_table = detector.post, {}
    cap = _step_cap(detector, max_steps, overrides)
    rows: dict[float, np.ndarray] = {}
    binding: dict[float, float] = {}
    capped: dict[float, float] = {}
    steps: dict[float, float] = {}

    def score(pmaps: PathMaps, values) -> None:
        for e in values:
            maps = post.apply(pmaps.maps[e], pmaps.foreground)
            rows[e] = dice_table(list(maps), gts, taus, post.min_component_px)
            binding[e], capped[e], steps[e] = solver_facts(pmaps.steps[e], pmaps.distance[e], e, cap)

    score(pm, eps_all)
    seconds = pm.seconds
    extended = 0

    best = _best_mg(rows, taus)
    while extend and extended < extend and best[1] == max(rows):
        top = max(rows)
        more = [_round_sig(top * f, 3) for f in (1.5, 2.0, 3.0)]
        pm2 = compute_maps(detector, x, more, max_steps=max_steps, progress=progress, raw=True, **overrides)
        score(pm2, more)
        seconds += pm2.seconds
        extended += 1
        best = _best_mg(rows, taus)
    eps_final = sorted(rows)
    table = np.stack([rows[e] for e in eps_final])
    base_tau, base_dice = _best(table[0], taus)
    return Choice(
        eps=best[1],
        tau=best[2],
        dice=best[0],
        base_tau=base_tau,
        base_dice=base_dice,
        eps_grid=eps_final,
        tau_grid=taus.tolist(),
        table=table.tolist(),
        n_images=len(idx),
        mean_steps=steps,
        seconds=seconds,
        post=post.as_dict(),
        post_table=post_table,
        binding_fraction=binding,
        step_cap_fraction=capped,
        peak_inside_grid=best[1] != max(eps_final),
        grid_extended=extended,
    )


# --- whole volumes ---------------------------------------------------------------------------------------------
def _volume_arrays(volumes: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(volumes, tuple | list) and len(volumes) == 2:
        images, masks = volumes
    else:
        images, masks = getattr(volumes, "images", None), getattr(volumes, "masks", None)
    images = np.asarray(images, dtype=np.float32)
    masks = np.asarray(masks).astype(bool)
    if images.ndim == 4:
        images = images[:, :, None]
    if images.ndim != 5 or masks.shape != (images.shape[0], images.shape[1], *images.shape[3:]):
        raise OptionError(f"volumes must be (R, Z, C, S, S) with masks (R, Z, S, S); got {images.shape}, {masks.shape}")
    return images, masks


def _flat_volumes(volumes: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validation volumes as their slices in order, (R * Z, C, S, S), and the masks (R, Z, S, S)."""
    images, masks = _volume_arrays(volumes)
    return images.reshape(-1, *images.shape[2:]), masks


#: z windows (mm) the whole-volume stage of ``calibrate`` tries: D averaged over the axial slices of a window
#: that wide (1, 3, 5, 7, 9 slices at 2 mm), docs/bench/zmean/rule.md
Z_GRID_MM = (0.0, 6.0, 10.0, 14.0, 18.0)


def across_volumes(post: PostProcessing, maps: np.ndarray, foreground: np.ndarray, volumes: Any) -> np.ndarray:
    """Post-processed maps of whole volumes (R, Z, S, S) averaged over ``post``'s z window, within each run of
    consecutive axial slices (a test split's two blocks are averaged apart), as ``detect`` averages a study."""
    if not post.z_mm:
        return maps
    slice_mm = getattr(volumes, "slice_mm", None)
    z = getattr(volumes, "z", None)
    if slice_mm is None or z is None:
        raise OptionError(
            "these volumes do not record their slice spacing (a data set built before z windows existed); rebuild "
            "it with `python main.py data brain-proxy`, or use a card without z_mm"
        )
    runs = np.split(np.arange(len(z)), np.flatnonzero(np.diff(np.asarray(z)) != 1) + 1)
    out = np.empty_like(maps, dtype=np.float32)
    for r in range(maps.shape[0]):
        for part in runs:
            out[r, part] = post.across_slices(maps[r, part], foreground[r, part], slice_mm)
    return out


@dataclass
class ZChoice:
    """The z window (mm) with the best mean +MG whole-volume Dice at a fixed eps, each window with its own tau
    (base and +MG); ``table``: per window [best +MG Dice, its tau, best base Dice, its tau]."""

    z_mm: float
    tau: float
    dice: float
    base_tau: float
    base_dice: float
    eps: float
    table: dict[str, list[float]]
    slices: int
    n_volumes: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _choose_z(
    post: PostProcessing, maps: dict[float, np.ndarray], fg: np.ndarray, masks: np.ndarray, volumes: Any,
    eps: float, taus: np.ndarray, z_grid_mm: Sequence[float],
) -> ZChoice:  # fmt: skip
    """The z stage on maps already computed (``maps[eps]`` and ``maps[0.0]``, (R, Z, S, S), post-processed in-plane
    with ``post``): per window the best +MG and base Dice and their taus; the best +MG window, ties to the smaller."""
    from dataclasses import replace

    table: dict[str, list[float]] = {}
    best = None
    for z_mm in sorted({float(v) for v in z_grid_mm}):
        windowed = replace(post, z_mm=z_mm)
        row = []
        for e in (float(eps), 0.0):
            m = across_volumes(windowed, maps[e], fg, volumes)
            tau, dsc = _best(dice_table(list(m), list(masks), taus, post.min_component_px), taus)
            row += [round(dsc, 6), tau]
        table[f"{z_mm:g}"] = row
        if best is None or row[0] > best[1][0]:
            best = (z_mm, row)
    z_mm, (dsc, tau, base_dsc, base_tau) = best
    return ZChoice(
        z_mm=z_mm, tau=tau, dice=dsc, base_tau=base_tau, base_dice=base_dsc, eps=float(eps), table=table,
        slices=z_window_slices(z_mm, getattr(volumes, "slice_mm", None)), n_volumes=int(masks.shape[0]),
    )  # fmt: skip


def choose_z_on_volumes(
    detector: Detector,
    volumes: Any,
    eps: float,
    tau_grid: Sequence[float] = DEFAULT_TAUS,
    z_grid_mm: Sequence[float] = Z_GRID_MM,
    *,
    max_steps: int | None = None,
    progress: Progress | None = None,
    **overrides,
) -> ZChoice:
    """The z window by the mean +MG whole-volume Dice over validation volumes at ``eps`` (held fixed), tau
    re-chosen for each window, base and +MG alike; ties go to the smaller window. The detector's other
    post-processing is applied first (its own ``z_mm`` is ignored). :func:`choose_on_volumes` runs the same stage
    on the maps it has already solved when given ``z_grid_mm``."""
    flat, masks = _flat_volumes(volumes)
    r, z = masks.shape[:2]
    eps_two = sorted({0.0, float(eps)})
    pm = compute_maps(detector, flat, eps_two, max_steps=max_steps, progress=progress, **overrides)
    fg = pm.foreground.reshape(r, z, *flat.shape[2:])
    maps = {e: pm.maps[e].reshape(fg.shape) for e in eps_two}
    return _choose_z(detector.post, maps, fg, masks, volumes, eps, _tau_array(tau_grid), z_grid_mm)


@dataclass
class VolumeChoice:
    """(eps, tau) for whole volumes: the mean over validation volumes of each volume's Dice (all its slices
    pooled, normal ones included, so false positives on normal slices count), with a fixed post-processing."""

    eps: float
    tau: float
    dice: float
    base_tau: float
    base_dice: float
    eps_grid: list[float]
    table: list[list[float]]
    n_volumes: int
    post: dict[str, int]
    seconds: float = 0.0
    #: at the chosen eps, over the volumes' slices that have foreground (the ones ``detect`` solves): the
    #: fraction whose solution lies on the eps-sphere, the fraction that used up the step budget, the mean steps
    binding_fraction: float = float("nan")
    step_cap_fraction: float = float("nan")
    mean_steps: float = float("nan")
    #: the z window chosen at ``eps`` from the same maps (:func:`choose_on_volumes` with ``z_grid_mm``), or None
    z: ZChoice | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "z": None if self.z is None else self.z.as_dict()}


def choose_postprocessing_on_volumes(
    detector: Detector,
    volumes: Any,
    tau_grid: Sequence[float] = DEFAULT_TAUS,
    grid: dict[str, Sequence[int]] = POST_GRID,
) -> tuple[PostProcessing, dict[str, float]]:
    """The post-processing with the best mean whole-volume Dice of the *base* model's maps (eps = 0: no solves)
    over validation volumes ``(images (R, Z, C, S, S), masks (R, Z, S, S))``: chosen on what ``detect`` and the
    viewer's volume run produce, normal slices included, rather than on abnormal slices alone."""
    flat, masks = _flat_volumes(volumes)
    pm = compute_maps(detector, flat, [0.0], raw=True)
    taus = _tau_array(tau_grid)
    return choose_postprocessing(
        pm.maps[0.0], pm.foreground, list(masks), taus, grid, detector.post.foreground_threshold
    )


def choose_on_volumes(
    detector: Detector,
    volumes: Any,
    eps_grid: Sequence[float],
    tau_grid: Sequence[float] = DEFAULT_TAUS,
    *,
    max_steps: int | None = None,
    progress: Progress | None = None,
    z_grid_mm: Sequence[float] | None = None,
    **overrides,
) -> VolumeChoice:
    """tau (base) and (eps, tau) (+MG) by mean whole-volume Dice over validation volumes ``(images (R, Z, C, S,
    S), masks (R, Z, S, S))``; the detector's post-processing is applied (choose it first with
    :func:`choose_on_validation`). With ``z_grid_mm`` the z window is then chosen at that eps from the same maps
    (``VolumeChoice.z``, as :func:`choose_z_on_volumes` would choose it, without solving again)."""
    flat, masks = _flat_volumes(volumes)
    r, z = masks.shape[:2]
    eps_all = sorted({0.0, *(float(e) for e in eps_grid)})
    taus = _tau_array(tau_grid)
    pm = compute_maps(detector, flat, eps_all, max_steps=max_steps, progress=progress, **overrides)
    post = detector.post
    fg = pm.foreground.reshape(r, z, *flat.shape[2:])
    maps = {e: pm.maps[e].reshape(fg.shape) for e in eps_all}
    table = np.stack(
        [
            dice_table(list(across_volumes(post, maps[e], fg, volumes)), list(masks), taus, post.min_component_px)
            for e in eps_all
        ]
    )
    base_tau, base_dice = _best(table[0], taus)
    best = _best_mg(dict(zip(eps_all, table, strict=True)), taus)
    eps = best[1]
    solved = pm.foreground.reshape(pm.foreground.shape[0], -1).any(axis=1)  # slices detect solves
    binding, capped, steps = solver_facts(
        pm.steps[eps][solved], pm.distance[eps][solved], eps, _step_cap(detector, max_steps, overrides)
    )
    return VolumeChoice(
        eps=eps,
        tau=best[2],
        dice=best[0],
        base_tau=base_tau,
        base_dice=base_dice,
        eps_grid=eps_all,
        table=np.round(table, 6).tolist(),
        n_volumes=r,
        post=post.as_dict(),
        seconds=pm.seconds,
        binding_fraction=binding,
        step_cap_fraction=capped,
        mean_steps=steps,
        z=None if z_grid_mm is None else _choose_z(post, maps, fg, masks, volumes, eps, taus, z_grid_mm),
    )


def evaluate_volumes(
    detector: Detector,
    volumes: Any,
    eps: float,
    tau: float,
    *,
    max_steps: int | None = None,
    progress: Progress | None = None,
    **overrides,
) -> dict[str, Any]:
    """Whole-volume scores at (eps, tau): per volume the Dice of all its slices pooled, false-positive pixels
    per normal slice (slices without lesion), and the pooled AP of the map over the volume's foreground."""
    flat, masks = _flat_volumes(volumes)
    r, z = masks.shape[:2]
    pm = compute_maps(detector, flat, [eps], max_steps=max_steps, progress=progress, **overrides)
    fg = pm.foreground.reshape(r, z, *flat.shape[2:])
    maps = across_volumes(detector.post, pm.maps[float(eps)].reshape(fg.shape), fg, volumes)
    dices, fps, aps = [], [], []
    for v in range(r):
        pred = detector.post.mask(maps[v], tau)
        dices.append(dice(pred, masks[v]))
        fps.append(fp_per_normal_slice(pred, masks[v]))
        aps.append(average_precision(maps[v][fg[v]], masks[v][fg[v]]))
    return {
        "volume_dice_mean": float(np.mean(dices)),
        "volume_dice": [round(float(d), 6) for d in dices],
        "fp_pixels_per_normal_slice": float(np.mean(fps)),
        "volume_ap_mean": float(np.nanmean(aps)),
        "n_volumes": int(r),
        "slices_per_volume": int(z),
    }


# --- test ------------------------------------------------------------------------------------------------------
def evaluate_on_test(
    detector: Detector,
    test_set: Any,
    eps: float,
    tau: float,
    *,
    subset: int | None = None,
    max_steps: int | None = None,
    progress: Progress | None = None,
    residuals: dict[str, float] | None = None,
    keep: dict[str, Any] | None = None,
    **overrides,
) -> Scores:
    """Scores at the (eps, tau) chosen on validation (eps = 0: the base model): per-image Dice and AP as mean
    and std over abnormal test slices, and pooled Dice/AP over all selected slices, with the detector's
    post-processing (its minimum component size included). A dict passed as ``residuals`` receives
    :func:`residual_means` of the same maps; one passed as ``keep`` receives the maps, foreground and indices."""
    images, masks = _arrays(test_set)
    masks = _need_masks(masks, "evaluating")
    idx = subset_indices(masks, subset, images.shape[0], abnormal_only=False)
    pm = compute_maps(detector, images[idx], [eps], max_steps=max_steps, progress=progress, **overrides)
    maps = pm.maps[float(eps)]
    scores = evaluate(list(maps), list(masks[idx]), float(tau), detector.post.min_component_px)
    if residuals is not None:
        residuals.update(residual_means(maps, masks[idx], pm.foreground))
    if keep is not None:
        keep.update(maps=maps, foreground=pm.foreground, idx=idx)
    return scores


def per_kind_ap(
    maps: np.ndarray, masks: np.ndarray, kinds: np.ndarray, foreground: np.ndarray, names: Sequence[str]
) -> dict[str, float | None]:
    """Pooled pixel AP of the maps for each lesion kind: positives are the foreground pixels of that kind
    (``kinds`` == k, 1-based in ``names`` order), negatives every normal foreground pixel; other kinds' pixels
    are left out. None for a kind with no pixels."""
    fg = np.asarray(foreground, bool)
    normal = fg & ~np.asarray(masks, bool)
    out: dict[str, float | None] = {}
    for k, name in enumerate(names, start=1):
        pos = fg & (kinds == k)
        if not pos.any():
            out[name] = None
            continue
        sel = normal | pos
        out[name] = average_precision(maps[sel], pos[sel])
    return out


def residual_means(maps: np.ndarray, masks: np.ndarray, foreground: np.ndarray) -> dict[str, float]:
    """Why +MG helps or not, in one number pair: the mean anomaly-map value on lesion pixels and on the normal
    foreground (pooled over the abnormal slices), and their ratio. MatchGen helps detection when it lowers the
    tissue residual more than the lesion residual (the ratio grows); a decoder that can also copy the lesion
    lowers both alike."""
    abn = masks.reshape(len(masks), -1).any(axis=1)
    m, g, fg = maps[abn], masks[abn].astype(bool), foreground[abn].astype(bool)
    lesion = float(m[g].mean()) if g.any() else float("nan")
    tissue_px = fg & ~g
    tissue = float(m[tissue_px].mean()) if tissue_px.any() else float("nan")
    return {
        "lesion_residual": lesion,
        "tissue_residual": tissue,
        "contrast": lesion / tissue if tissue > 0 else math.nan,
    }


# --- intensity-threshold baseline ------------------------------------------------------------------------------
def intensity_maps(images: np.ndarray, post: PostProcessing | None = None) -> np.ndarray:
    """The image itself (mean over channels) inside the foreground, with the same post-processing as the
    models' maps: a threshold on it finds bright lesions without any model."""
    post = post or PostProcessing()
    x, _ = _arrays((images, None))
    xs = x.mean(axis=1)
    return postprocess(xs, foreground_mask(xs, post.foreground_threshold), post.median_size)


def intensity_volume_maps(images: np.ndarray) -> np.ndarray:
    """:func:`intensity_maps` of whole volumes (R, Z, C, S, S) -> (R, Z, S, S)."""
    imgs = np.asarray(images, np.float32)
    r, z = imgs.shape[:2]
    return intensity_maps(imgs.reshape(r * z, *imgs.shape[2:])).reshape(r, z, *imgs.shape[3:])


def choose_intensity_volume_tau(maps: np.ndarray, masks: np.ndarray, tau_grid: Sequence[float] = DEFAULT_TAUS) -> float:
    """The intensity threshold's tau for whole volumes: the best mean volume Dice over validation volumes (maps
    from :func:`intensity_volume_maps`); ties go to the smaller tau."""
    taus = _tau_array(tau_grid)
    return _best(dice_table(list(maps), list(np.asarray(masks)), taus), taus)[0]


@dataclass
class BaselineChoice:
    tau: float
    dice: float
    tau_grid: list[float]
    dice_per_tau: list[float]
    n_images: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def choose_intensity_baseline(
    val_set: Any,
    tau_grid: Sequence[float] = DEFAULT_TAUS,
    *,
    post: PostProcessing | None = None,
    subset: int | None = None,
) -> BaselineChoice:
    images, masks = _arrays(val_set)
    masks = _need_masks(masks, "choosing the baseline's tau")
    idx = subset_indices(masks, subset, images.shape[0], abnormal_only=True)
    taus = _tau_array(tau_grid)
    row = mean_dice_per_tau(list(intensity_maps(images[idx], post)), list(masks[idx]), taus)
    tau, dsc = _best(row, taus)
    return BaselineChoice(tau, dsc, taus.tolist(), row.tolist(), len(idx))


def evaluate_intensity_baseline(
    test_set: Any, tau: float, *, post: PostProcessing | None = None, subset: int | None = None
) -> Scores:
    images, masks = _arrays(test_set)
    masks = _need_masks(masks, "evaluating")
    idx = subset_indices(masks, subset, images.shape[0], abnormal_only=False)
    return evaluate(list(intensity_maps(images[idx], post)), list(masks[idx]), float(tau))
