"""The overlays the viewer draws: the detection over the input (D > tau coloured as in Figure 2 when a ground truth
is known: TP red, FP blue, FN green; TN transparent so the anatomy shows; plain red otherwise, with the slice's
Dice), and the brain mask's outline (:func:`brain_outline`) over every panel.
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


#: colour of the brain-mask outline (cyan: apart from the detection's red, blue and green)
BRAIN_COLOUR = (0, 220, 255)


def outline(mask: np.ndarray) -> np.ndarray:
    """The in-plane boundary of a 2D mask: its pixels with a 4-neighbour outside it (or on the image edge)."""
    from scipy import ndimage as ndi

    m = np.asarray(mask, bool)
    return m & ~ndi.binary_erosion(m, border_value=0)


def brain_outline(brain: np.ndarray | None) -> np.ndarray | None:
    """RGBA uint8 (X, Y, 4): the outline of a slice's brain mask, opaque, transparent elsewhere (None: no mask)."""
    if brain is None:
        return None
    edge = outline(brain)
    rgba = np.zeros((*edge.shape, 4), np.uint8)
    rgba[edge, :3] = BRAIN_COLOUR
    rgba[edge, 3] = 255
    return rgba
