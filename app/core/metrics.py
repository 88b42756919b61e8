"""Detection metrics: Dice and pixel average precision, per image and pooled over a dataset, and the
validation grid search that picks (eps, tau).

Empty-mask rule: Dice of an empty prediction against an empty ground truth is 1 (nothing to find, nothing
found); the paper's per-image means run over *abnormal* images only (non-empty ground truth), so the rule only
matters for the pooled score and for callers that include normal images. AP is undefined without positives:
:func:`average_precision` returns NaN for an empty ground truth and the means skip such images.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """2|P & G| / (|P| + |G|), with 1.0 when both are empty."""
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    denom = np.count_nonzero(p) + np.count_nonzero(g)
    if denom == 0:
        return 1.0
    return 2.0 * np.count_nonzero(p & g) / denom


def fp_per_normal_slice(pred: np.ndarray, gt: np.ndarray) -> float:
    """False-positive pixels per normal slice of a volume (Z, S, S): the flagged pixels on slices without any
    ground truth, divided by their number (0 when every slice holds a lesion)."""
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    normal = ~g.reshape(len(g), -1).any(axis=1)
    return float(p[normal].sum() / max(1, normal.sum()))


def lesion_labels(gt: np.ndarray) -> tuple[np.ndarray, int]:
    """The lesions of a ground-truth mask: its connected components (face-connected, in as many dimensions as the
    array has), labelled 1..n; every per-lesion figure uses this labelling and its order."""
    from scipy import ndimage

    return ndimage.label(np.asarray(gt, dtype=bool))


#: a lesion counts as found when the detection flags more than this fraction of its voxels (every lesion-level
#: figure: val_select's "lesions found by size", bench triage's "lesions found by volume", where a finding must also
#: lie at least this fraction in lesions, app.bench.triage.lesion_findings)
FOUND_FRACTION = 0.1


def lesion_hits(pred: np.ndarray, gt: np.ndarray) -> list[tuple[int, float]]:
    """Per lesion (:func:`lesion_labels`) its size in voxels and the fraction of its voxels the prediction flags,
    in label order."""
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    labels, n = lesion_labels(g)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    hit = np.bincount(labels.ravel(), weights=p.ravel().astype(np.float64), minlength=n + 1)[1:]
    return [(int(s), float(h / s)) for s, h in zip(sizes, hit, strict=True)]


def average_precision(scores: np.ndarray, gt: np.ndarray) -> float:
    """Pixel AP: sum over thresholds of (R_n - R_{n-1}) P_n, the definition scikit-learn uses
    (``sklearn.metrics.average_precision_score``), without interpolation; ties are one threshold.
    A numpy implementation because it runs on millions of pixels inside the grid search."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(gt, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {np.shape(scores)} and ground truth {np.shape(gt)} differ in shape")
    n_pos = np.count_nonzero(y)
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    # last index of each block of tied scores
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = tp[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def dice_per_tau(scores: np.ndarray, gt: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Dice of (scores > tau) for every tau at once (one sort instead of one pass per tau)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(gt, dtype=bool).ravel()
    taus = np.asarray(taus, dtype=np.float64)
    n_gt = np.count_nonzero(y)
    s_sorted = np.sort(s)
    pos_sorted = np.sort(s[y])
    n_pred = s.size - np.searchsorted(s_sorted, taus, side="right")
    n_tp = pos_sorted.size - np.searchsorted(pos_sorted, taus, side="right")
    denom = n_pred + n_gt
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom == 0, 1.0, 2.0 * n_tp / np.maximum(denom, 1))
    return out


@dataclass
class Scores:
    """Per-image means over abnormal images (the paper's numbers) and pooled dataset-level scores."""

    dice_mean: float
    dice_std: float
    ap_mean: float
    ap_std: float
    pooled_dice: float
    pooled_ap: float
    n_images: int
    #: per-image Dice and AP of the abnormal images, in input order (for paired comparisons)
    dice_per_image: list[float] = field(default_factory=list)
    ap_per_image: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def paired_difference(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of b - a over paired images with a 95 % percentile bootstrap interval (seeded, so a report is
    reproducible), and how many images b wins, loses and ties. Per-image scores vary far more between images than
    between methods, so the paired difference says more than the two means with their standard deviations."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired scores must be two equally long 1-D sequences")
    d = b - a
    if d.size == 0:
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "wins": 0, "losses": 0, "ties": 0, "n": 0}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {
        "mean": float(d.mean()),
        "ci95": [float(lo), float(hi)],
        "wins": int((d > 0).sum()),
        "losses": int((d < 0).sum()),
        "ties": int((d == 0).sum()),
        "n": int(d.size),
    }


def paired_by_bins(
    a: Sequence[float],
    b: Sequence[float],
    values: Sequence[float],
    edges: Sequence[float],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict]:
    """:func:`paired_difference` of b - a within each bin of ``values`` (e.g. each slice's brain area): bin k holds
    ``edges[k] <= value < edges[k + 1]``, the last bin everything from ``edges[-1]`` up (its ``hi`` is None). Each
    row adds ``lo``, ``hi`` and the two means; an empty bin is kept (n 0, means NaN) so tables of several models
    line up."""
    a, b, v = (np.asarray(x, np.float64) for x in (a, b, values))
    if not (a.shape == b.shape == v.shape) or a.ndim != 1:
        raise ValueError("paired scores and their values must be three equally long 1-D sequences")
    if len(edges) == 0 or np.any(np.diff(edges) <= 0):
        raise ValueError("bin edges must be one or more increasing numbers")
    bounds = [*map(float, edges), None]
    rows = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        sel = (v >= lo) & (v < hi) if hi is not None else v >= lo
        p = paired_difference(a[sel], b[sel], n_boot=n_boot, seed=seed)
        mean_a = float(a[sel].mean()) if sel.any() else float("nan")
        mean_b = float(b[sel].mean()) if sel.any() else float("nan")
        rows.append({"lo": lo, "hi": hi, "a_mean": mean_a, "b_mean": mean_b, **p})
    return rows


def evaluate(maps: Sequence[np.ndarray], gts: Sequence[np.ndarray], tau: float, min_component_px: int = 0) -> Scores:
    """Scores of difference maps thresholded at tau (without in-plane components smaller than
    ``min_component_px``); means over images with a non-empty ground truth."""
    from app.core.maps import detection_mask

    if len(maps) != len(gts):
        raise ValueError("maps and ground truths differ in number")
    preds = [detection_mask(m, tau, min_component_px) for m in maps]
    dices, aps = [], []
    for m, p, g in zip(maps, preds, gts, strict=True):
        if not np.any(g):
            continue
        dices.append(dice(p, g))
        aps.append(average_precision(m, g))
    all_m = np.concatenate([np.ravel(m) for m in maps]) if maps else np.zeros(0)
    all_p = np.concatenate([np.ravel(p) for p in preds]) if preds else np.zeros(0, bool)
    all_g = np.concatenate([np.ravel(g) for g in gts]) if gts else np.zeros(0, bool)
    pooled_ap = average_precision(all_m, all_g) if all_g.any() else float("nan")
    return Scores(
        dice_mean=float(np.mean(dices)) if dices else float("nan"),
        dice_std=float(np.std(dices)) if dices else float("nan"),
        ap_mean=float(np.mean(aps)) if aps else float("nan"),
        ap_std=float(np.std(aps)) if aps else float("nan"),
        pooled_dice=dice(all_p, all_g),
        pooled_ap=pooled_ap,
        n_images=len(dices),
        dice_per_image=[float(v) for v in dices],
        ap_per_image=[float(v) for v in aps],
    )


def mean_dice_per_tau(maps: Iterable[np.ndarray], gts: Iterable[np.ndarray], taus: np.ndarray) -> np.ndarray:
    """Mean per-image Dice over abnormal images, for every tau."""
    rows = [dice_per_tau(m, g, taus) for m, g in zip(maps, gts, strict=True) if np.any(g)]
    if not rows:
        return np.full(len(taus), np.nan)
    return np.mean(rows, axis=0)


def _kept_counts(
    unit: np.ndarray, gt: np.ndarray, taus: np.ndarray, min_sizes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """For one item (an image (S, S) or a volume (Z, S, S)): flagged and true-positive pixel counts of D > tau
    without in-plane (8-connected) components smaller than each of ``min_sizes``, for every tau -- arrays
    (len(min_sizes), len(taus)). Every tau of a slice is labelled in one call: the thresholded planes are stacked
    (tau, S, S) and labelled with a structure that joins pixels within a plane only, so each component is one
    plane's, exactly what :func:`app.core.maps.detection_mask` labels tau by tau."""
    from scipy import ndimage

    mins = np.asarray(min_sizes, dtype=np.int64)
    pred = np.zeros((len(mins), len(taus)))
    tp = np.zeros((len(mins), len(taus)))
    m = np.asarray(unit)
    g = np.asarray(gt, dtype=bool)
    lo = float(np.min(m))
    everything = taus < lo  # the whole item is detected: components do not matter (as in dice_table)
    pred[:, everything] = m.size
    tp[:, everything] = np.count_nonzero(g)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within a plane, never across planes
    for ms, gs in zip(m.reshape(-1, *m.shape[-2:]), g.reshape(-1, *g.shape[-2:]), strict=True):
        cols = np.flatnonzero(~everything & (taus < float(np.max(ms))))  # taus that flag something here
        if not cols.size:
            continue
        widest = ms > taus[cols[0]]  # the lowest such tau flags the most: label only its bounding box
        ys, xs = np.flatnonzero(widest.any(axis=1)), np.flatnonzero(widest.any(axis=0))
        box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
        lab, n = ndimage.label(ms[box][None] > taus[cols, None, None], structure=structure)
        if not n:
            continue
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        hits = np.bincount(lab[:, gs[box]].ravel(), minlength=n + 1)[1:]  # lesion pixels per component
        # labels are numbered in raster order, so each plane's labels follow the previous planes'
        last = np.maximum.accumulate(lab.reshape(len(cols), -1).max(axis=1))
        plane = np.searchsorted(last, np.arange(1, n + 1), side="left")
        for i, mc in enumerate(mins):
            keep = sizes >= mc if mc > 1 else slice(None)
            pred[i, cols] += np.bincount(plane[keep], weights=sizes[keep], minlength=len(cols))
            tp[i, cols] += np.bincount(plane[keep], weights=hits[keep], minlength=len(cols))
    return pred, tp


def dice_tables(
    maps: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    taus: np.ndarray,
    min_sizes: Sequence[int],
    abnormal_only: bool = True,
) -> np.ndarray:
    """:func:`dice_table` for several minimum component sizes at once, (len(min_sizes), len(taus)): each
    threshold is labelled once for all of them (what makes choosing the post-processing affordable)."""
    taus = np.asarray(taus, dtype=np.float64)
    pairs = [(m, g) for m, g in zip(maps, gts, strict=True) if np.any(g) or not abnormal_only]
    if not pairs:
        return np.full((len(min_sizes), len(taus)), np.nan)
    labelled = [mc for mc in min_sizes if mc > 1]
    rows: dict[int, list[np.ndarray]] = {mc: [] for mc in min_sizes}
    for m, g in pairs:
        plain = dice_per_tau(m, g, taus) if len(labelled) < len(min_sizes) else None
        if labelled:
            pred, tp = _kept_counts(m, g, taus, labelled)
            n_gt = np.count_nonzero(g)
            denom = pred + n_gt
            with np.errstate(invalid="ignore", divide="ignore"):
                dsc = np.where(denom == 0, 1.0, 2.0 * tp / np.maximum(denom, 1))
        for mc in min_sizes:
            rows[mc].append(dsc[labelled.index(mc)] if mc > 1 else plain)
    return np.stack([np.mean(rows[mc], axis=0) for mc in min_sizes])


def dice_table(
    maps: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    taus: np.ndarray,
    min_component_px: int = 0,
    abnormal_only: bool = True,
) -> np.ndarray:
    """Mean Dice over the given maps (images, or whole volumes stacked as (Z, S, S)) for every tau, with the
    detection D > tau cleaned of in-plane components smaller than ``min_component_px``. ``abnormal_only``
    averages over items with a non-empty ground truth (the paper's per-image mean). Without a component rule
    this is :func:`mean_dice_per_tau` (one sort per item); with one, every slice's thresholds are labelled
    together (:func:`dice_tables`)."""
    return dice_tables(maps, gts, taus, [min_component_px], abnormal_only)[0]


@dataclass
class GridChoice:
    eps: float
    tau: float
    dice: float
    table: np.ndarray  # (n_eps, n_tau) mean validation Dice


def grid_search(
    maps_by_eps: Mapping[float, Sequence[np.ndarray]], gts: Sequence[np.ndarray], taus: Sequence[float]
) -> GridChoice:
    """Pick (eps, tau) with the highest mean per-image Dice on *validation* data. Ties go to the smaller eps,
    then the smaller tau (the more conservative choice)."""
    eps_values = sorted(maps_by_eps)
    taus = np.asarray(sorted(taus), dtype=np.float64)
    table = np.stack([mean_dice_per_tau(maps_by_eps[e], gts, taus) for e in eps_values])
    flat = np.nan_to_num(table, nan=-1.0)
    i, j = np.unravel_index(int(np.argmax(flat)), flat.shape)
    return GridChoice(eps=float(eps_values[i]), tau=float(taus[j]), dice=float(table[i, j]), table=table)
