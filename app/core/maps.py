"""Difference and detection maps, shared by the viewer, ``detect``, figure export and the benchmarks.

All functions work on numpy arrays of one image (H, W) or (C, H, W), or a stack (N, [C,] H, W) where noted, so
that base model and +MG go through exactly the same post-processing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from app.foreground import FOREGROUND_THRESHOLD

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


def foreground_mask(x: np.ndarray, threshold: float = FOREGROUND_THRESHOLD, fill_holes: bool = True) -> np.ndarray:
    """Body/brain mask of a normalised image (H, W) or stack (N, H, W): intensity above ``threshold``, holes
    filled per slice, so that dark lesions inside the brain stay in the mask while the background is dropped."""
    x = np.asarray(x)
    fg = x > threshold
    if fill_holes:
        if fg.ndim == 2:
            fg = ndimage.binary_fill_holes(fg)
        else:
            fg = np.stack([ndimage.binary_fill_holes(f) for f in fg.reshape(-1, *fg.shape[-2:])]).reshape(fg.shape)
    return fg


def postprocess(d: np.ndarray, foreground: np.ndarray | None = None, median_size: int = 0) -> np.ndarray:
    """Optionally median-filter D (in-plane only, per slice), then zero it outside the foreground (masking last,
    so the filter cannot spread values into the background)."""
    out = np.asarray(d, dtype=np.float32)
    if median_size and median_size > 1:
        size = (1,) * (out.ndim - 2) + (median_size, median_size)
        out = ndimage.median_filter(out, size=size, mode="constant")
    if foreground is not None:
        out = out * foreground
    return out


def detection_mask(d: np.ndarray, tau: float) -> np.ndarray:
    """Binary detection: D > tau."""
    return np.asarray(d) > tau


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
