"""The detection overlay the viewer draws over the input: D > tau coloured as in Figure 2 when a ground truth is
known (TP red, FP blue, FN green; TN transparent so the anatomy shows), plain red otherwise, with the slice's Dice.
"""

from __future__ import annotations

import numpy as np

from app.core.maps import CONFUSION_COLOURS, confusion_rgb
from app.core.metrics import dice


def detection_overlay(
    d: np.ndarray, tau: float, gt: np.ndarray | None, opacity: float, pred: np.ndarray | None = None
) -> tuple[np.ndarray, float | None]:
    """RGBA uint8 (X, Y, 4) and the Dice of the detection against ``gt`` (None without a ground truth). The
    detection is ``pred`` when given (the card's component rule applied), else D > tau."""
    pred = np.asarray(d) > tau if pred is None else np.asarray(pred, bool)
    alpha = int(round(255 * min(max(opacity, 0.0), 1.0)))
    rgba = np.zeros((*pred.shape, 4), np.uint8)
    if gt is not None:
        rgba[..., :3] = confusion_rgb(pred, gt)
        rgba[..., 3] = np.where(pred | gt, alpha, 0)
        return rgba, float(dice(pred, gt))
    rgba[..., :3] = CONFUSION_COLOURS["tp"]
    rgba[..., 3] = np.where(pred, alpha, 0)
    return rgba, None
