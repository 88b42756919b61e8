"""Difference and detection maps, shared by the viewer, ``detect``, figure export and the benchmarks.

All functions work on numpy arrays of one image (H, W) or (C, H, W), or a stack (N, [C,] H, W) where noted, so
that base model and +MG go through exactly the same post-processing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from app.foreground import FOREGROUND_THRESHOLD, fill_holes
from app.nets.card import Z_EDGES

#: Figure 2 of the paper: true positive red, false positive blue, false negative green, true negative black.
CONFUSION_COLOURS = {
    "tp": (255, 0, 0),
    "fp": (0, 0, 255),
    "fn": (0, 255, 0),
    "tn": (0, 0, 0),
}


def difference_map(x: np.ndarray, s: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
    """D = |x - s|, averaged over the channel axis when there is one (RGB fundus images)."""
    d = np.abs(np.asarray(x, dtype=np.float32) - np.asarray(s, dtype=np.float32))
    if channel_axis is not None:
        d = d.mean(axis=channel_axis)
    return d


# fill_holes lives in app.foreground (data uses it too); foreground_mask's argument of that name hides it there
_fill_holes = fill_holes


def foreground_mask(x: np.ndarray, threshold: float = FOREGROUND_THRESHOLD, fill_holes: bool = True) -> np.ndarray:
    """Body/brain mask of a normalised image (H, W) or stack (N, H, W): intensity above ``threshold``, holes
    filled per slice, so that dark lesions inside the brain stay in the mask while the background is dropped."""
    x = np.asarray(x)
    fg = x > threshold
    if fill_holes:
        if fg.ndim == 2:
            fg = _fill_holes(fg)
        else:
            fg = np.stack([_fill_holes(f) for f in fg.reshape(-1, *fg.shape[-2:])]).reshape(fg.shape)
    return fg


def erode_foreground(foreground: np.ndarray, pixels: int) -> np.ndarray:
    """The foreground eroded by ``pixels`` in-plane (per slice; a disc of that radius), so the brain's rim,
    where every model's residual is largest, is not searched (Baur et al. 2021; Kascenas et al. 2022)."""
    fg = np.asarray(foreground, dtype=bool)
    if not pixels or pixels < 1:
        return fg
    r = int(pixels)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = (yy**2 + xx**2) <= r * r
    structure = disc.reshape((1,) * (fg.ndim - 2) + disc.shape)
    return ndimage.binary_erosion(fg, structure=structure, border_value=0)


def postprocess(
    d: np.ndarray, foreground: np.ndarray | None = None, median_size: int = 0, erode_px: int = 0
) -> np.ndarray:
    """Optionally median-filter D (in-plane only, per slice), then zero it outside the foreground eroded by
    ``erode_px`` (masking last, so the filter cannot spread values into the background)."""
    out = np.asarray(d, dtype=np.float32)
    if median_size and median_size > 1:
        size = (1,) * (out.ndim - 2) + (median_size, median_size)
        out = ndimage.median_filter(out, size=size, mode="constant")
    if foreground is not None:
        out = out * erode_foreground(foreground, erode_px)
    return out


def z_window_slices(z_mm: float, slice_mm: float) -> int:
    """How many neighbouring axial slices a window of ``z_mm`` millimetres spans at ``slice_mm`` spacing: the odd
    number nearest to z_mm / slice_mm (halves round down), at least 1 (z_mm 0: no averaging)."""
    if not z_mm or z_mm <= 0:
        return 1
    if not (np.isfinite(slice_mm) and slice_mm > 0):
        raise ValueError(f"slice spacing must be a positive number of mm, not {slice_mm!r}")
    half = int(np.ceil((z_mm / slice_mm - 1.0) / 2.0 - 0.5))
    return 2 * max(half, 0) + 1


def _check_edge(edge: str) -> None:
    if edge not in Z_EDGES:
        raise ValueError(f"the z window's edge rule must be one of {', '.join(Z_EDGES)}, not {edge!r}")


def z_window(k: int, n: int, slices: int, edge: str = "nearest") -> np.ndarray:
    """The slice indices whose D the mean of slice ``k`` (of ``n``) takes over ``slices`` neighbours: k - h .. k + h,
    at the ends of the volume (``edge``, :data:`Z_EDGES`) clamped into it, edge slices repeated as
    ``scipy.ndimage``'s ``nearest`` mode does ("nearest"), or only those inside it ("shrink")."""
    _check_edge(edge)
    h = slices // 2
    if edge == "shrink":
        return np.arange(max(k - h, 0), min(k + h, n - 1) + 1)
    return np.clip(np.arange(k - h, k + h + 1), 0, n - 1)


def z_mean(d: np.ndarray, slices: int, foreground: np.ndarray | None = None, edge: str = "nearest") -> np.ndarray:
    """D (Z, H, W), axial slices in order, averaged over ``slices`` neighbouring slices (an odd number; at the ends
    of the volume the slices :func:`z_window` names for ``edge``), then zeroed outside ``foreground`` (Z, H, W) of
    each slice. A 2-D model's residual on normal tissue varies independently from slice to slice, a lesion
    continues across slices: the mean lowers the first and keeps the second. With "nearest" the end slice takes
    (h + 1) of the 2h + 1 weights of its own mean, so its noise is barely lowered; "shrink" averages the h + 1
    slices that exist. ``slices`` 1 returns D unchanged."""
    _check_edge(edge)
    out = np.asarray(d, dtype=np.float32)
    if slices <= 1:
        return out
    if slices % 2 == 0:
        raise ValueError(f"the slice window must be odd, not {slices}")
    if edge == "shrink":  # the window's sum over the slices inside the volume, divided by how many there are
        total = ndimage.uniform_filter1d(out.astype(np.float64), slices, axis=0, mode="constant", cval=0.0)
        count = ndimage.uniform_filter1d(np.ones(len(out)), slices, mode="constant", cval=0.0)
        out = (total / count.reshape(-1, *([1] * (out.ndim - 1)))).astype(np.float32)
    else:
        out = ndimage.uniform_filter1d(out, slices, axis=0, mode="nearest")
    return out if foreground is None else out * np.asarray(foreground, dtype=bool)


def remove_small_components(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop connected components (in-plane, 8-connected, per slice) smaller than ``min_pixels``. In-plane so
    that a slice shows exactly what the whole-volume mask holds on it."""
    m = np.asarray(mask, dtype=bool)
    if not min_pixels or min_pixels <= 1 or not m.any():
        return m
    flat = m.reshape(-1, *m.shape[-2:])
    out = np.zeros_like(flat)
    eight = np.ones((3, 3), dtype=bool)
    for i, sl in enumerate(flat):
        if not sl.any():
            continue
        lab, n = ndimage.label(sl, structure=eight)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        keep = sizes >= min_pixels
        keep[0] = False
        out[i] = keep[lab]
    return out.reshape(m.shape)


def detection_mask(d: np.ndarray, tau: float, min_component_px: int = 0) -> np.ndarray:
    """Binary detection: D > tau, without in-plane components smaller than ``min_component_px``."""
    return remove_small_components(np.asarray(d) > tau, min_component_px)


def study_detection_mask(d_volume: np.ndarray, tau: float, geometry, min_component_px: int = 0) -> np.ndarray:
    """The binary detection on the study grid: D > tau, without in-plane (axial) components smaller than
    ``min_component_px`` *model* pixels (converted to study voxels by the pixel areas, so the rule means the
    same area in mm^2 at any resolution). ``geometry``: the study's :class:`app.data.slices.SliceGeometry`."""
    mask = np.asarray(d_volume) > tau
    if not min_component_px:
        return mask
    area = geometry.pixel_mm**2 / (geometry.spacing[0] * geometry.spacing[1])
    min_vox = max(1, int(round(min_component_px * area)))
    # axial slices are the last axis of the canonical grid; label each (X, Y) plane
    return np.moveaxis(remove_small_components(np.moveaxis(mask, 2, 0), min_vox), 0, 2)


def confusion_rgb(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 image coloured as in Figure 2 (TP red, FP blue, FN green, TN black)."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    rgb = np.zeros((*pred.shape, 3), dtype=np.uint8)
    rgb[pred & gt] = CONFUSION_COLOURS["tp"]
    rgb[pred & ~gt] = CONFUSION_COLOURS["fp"]
    rgb[~pred & gt] = CONFUSION_COLOURS["fn"]
    return rgb


def confusion_counts(pred: np.ndarray, gt: np.ndarray) -> dict[str, int]:
    """Pixel/voxel counts of the four Figure-2 classes (``detect --mask`` prints them beside the Dice)."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    return {
        "tp": int(np.count_nonzero(pred & gt)),
        "fp": int(np.count_nonzero(pred & ~gt)),
        "fn": int(np.count_nonzero(~pred & gt)),
        "tn": int(np.count_nonzero(~pred & ~gt)),
    }
