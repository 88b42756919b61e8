"""A study seen through a model: raw axial slices for display, model-sized normalised slices for the model,
and the way back from model-sized maps to the slice's own grid. One object per (study, model input format).

Display orientation is radiological and fixed here, once, for the viewer and the figures alike: the patient's
right on the left of the screen, anterior at the top (``data`` is RAS-canonical, see :class:`app.io.Study`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import StudyError

#: radiological orientation letters (left, right, top, bottom) of an axial slice shown by :func:`to_screen`
ORIENTATION_LETTERS = ("R", "L", "A", "P")


def to_screen(arr: np.ndarray) -> np.ndarray:
    """A slice (X, Y[, C]) as matplotlib shows it (rows top->bottom = anterior->posterior, columns
    left->right = patient right->left)."""
    a = np.asarray(arr)
    a = np.swapaxes(a, 0, 1)
    return a[::-1, ::-1]


def to_pyqtgraph(arr: np.ndarray) -> np.ndarray:
    """A slice (X, Y[, C]) for a pyqtgraph ImageItem (column-major, y axis up): only X is flipped."""
    return np.asarray(arr)[::-1]


def from_pyqtgraph_xy(ix: int, iy: int, nx: int) -> tuple[int, int]:
    """Image-item pixel (column, row) back to the slice's (X, Y) voxel index."""
    return nx - 1 - ix, iy


@dataclass(frozen=True)
class ModelInput:
    """What a model expects: square slices of ``size`` with ``channels`` channels, normalised as named."""

    size: int
    channels: int = 1
    normalization: str = "mri-percentile"

    @classmethod
    def of(cls, model) -> ModelInput:
        c = model.config
        return cls(int(c.image_size), int(c.channels), str(c.normalization))


class PrepCache:
    """Prepared model inputs of one study per :class:`ModelInput`, the ``max_items`` most recently used kept
    (each holds a normalised copy of the volume). Thread-safe: a worker prepares while the GUI thread asks
    whether it is done; two threads asking for the same input compute it once."""

    def __init__(self, max_items: int = 3):
        import threading
        from collections import OrderedDict

        self.max_items = max_items
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0  # how many times prepare_study ran (tests check the cache with it)

    def __contains__(self, key) -> bool:
        return key in self._d

    def peek(self, key: ModelInput):
        """The prepared input if it is there, else None; never waits for a preparation in progress (the GUI
        thread asks this)."""
        return self._d.get(key)

    def get(self, study, key: ModelInput):
        with self._lock:
            prep = self._d.get(key)
            if prep is None:
                from app.data.pipeline import prepare_study

                prep = prepare_study(study, key.size, key.channels, method=key.normalization or None)
                self.computed += 1
                self._d[key] = prep
                while len(self._d) > self.max_items:
                    self._d.popitem(last=False)
            self._d.move_to_end(key)
            return prep


class StudySlices:
    """Axial slices of a :class:`app.io.Study` in raw units and as model inputs; maps back to the slice grid."""

    def __init__(self, study, model_input: ModelInput | None = None, gt: np.ndarray | None = None):
        self.study = study
        self.raw = np.asarray(study.data, dtype=np.float32)
        self.input = model_input
        self.gt = None if gt is None else self.check_mask(gt)
        nz = self.raw[np.abs(self.raw) > 0] if self.raw.size < 50_000_000 else self.raw.ravel()[::17]
        if nz.size == 0:
            nz = self.raw.ravel()
        lo, hi = (float(v) for v in np.percentile(nz, [0.5, 99.5]))
        if hi <= lo:
            lo, hi = float(self.raw.min()), float(self.raw.max())
        self.robust_range = (lo, hi)
        # prepared inputs per model input format, shared by every with_model() view of this study
        self._preps = PrepCache()

    # --- facts ------------------------------------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        return int(self.raw.shape[2])

    @property
    def slice_shape(self) -> tuple[int, int]:
        return (int(self.raw.shape[0]), int(self.raw.shape[1]))

    @property
    def modality(self) -> str:
        return str(getattr(self.study, "modality", "OT"))

    @property
    def name(self) -> str:
        return Path(str(getattr(self.study, "source", "study"))).name

    @property
    def initial_slice(self) -> int:
        """The slice to open on: the one with the largest ground-truth area, else the middle one."""
        if self.gt is not None and self.gt.any():
            return int(np.argmax(self.gt.sum(axis=(0, 1))))
        return self.n_slices // 2

    def default_window(self) -> tuple[float, float]:
        if self.modality == "CT":
            return (400.0, 40.0)
        lo, hi = self.robust_range
        return (hi - lo, (hi + lo) / 2.0)

    def check_mask(self, gt: np.ndarray) -> np.ndarray:
        g = np.asarray(gt)
        if g.ndim == 4 and g.shape[3] == 1:
            g = g[..., 0]
        if tuple(g.shape[:3]) != tuple(self.raw.shape[:3]):
            raise StudyError(f"the mask's grid {tuple(g.shape)} differs from the study's {tuple(self.raw.shape[:3])}")
        return g > 0

    def with_model(self, model_input: ModelInput) -> StudySlices:
        if model_input == self.input:
            return self
        out = StudySlices.__new__(StudySlices)
        out.__dict__.update(self.__dict__)
        out.input = model_input
        return out

    # --- slices -----------------------------------------------------------------------------------------------
    def raw_slice(self, k: int) -> np.ndarray:
        return self.raw[:, :, k]

    def gt_slice(self, k: int) -> np.ndarray | None:
        return None if self.gt is None else self.gt[:, :, k]

    def _prepared(self):
        """Normalised volume, model slices and their geometry (:func:`app.data.prepare_study`) for this view's
        model input: computed once per input format (size, channels, normalisation) and kept for the others."""
        if self.input is None:
            raise StudyError("no model chosen")
        return self._preps.get(self.study, self.input)

    def prepare(self) -> None:
        """Prepare the model input now (slow for a large CT or a skull-on MRI's brain extraction: call it off the
        GUI thread)."""
        self._prepared()

    def prepared(self):
        """The :class:`app.data.pipeline.PreparedStudy` of this view's model input, or None before
        :meth:`prepare` ran (never computed here: the GUI thread asks this)."""
        return None if self.input is None else self._preps.peek(self.input)

    def brain_slice(self, k: int) -> np.ndarray | None:
        """The brain mask the study was prepared with, on slice k (None: not prepared yet, or no brain found)."""
        prep = self.prepared()
        return None if prep is None or prep.brain is None else prep.brain[:, :, k]

    @property
    def is_prepared(self) -> bool:
        return self.input is not None and self.input in self._preps

    def normalized(self) -> np.ndarray:
        """The whole volume in [0, 1] as the model was trained."""
        return self._prepared().volume

    @property
    def slice_mm(self) -> float:
        """Spacing of the axial slices in mm (the model slices are the study's axial slices, in order)."""
        return float(self._prepared().geometry.spacing[2])

    def model_slice(self, k: int) -> np.ndarray:
        """(C, S, S) float32 in [0, 1]."""
        return self._prepared().x[k]

    def model_slices(self, ks: list[int] | None = None) -> np.ndarray:
        """(N, C, S, S) for slices ``ks`` (all by default)."""
        x = self._prepared().x
        return x if ks is None else x[list(ks)]

    def to_slice_grid(self, arr: np.ndarray) -> np.ndarray:
        """A model-sized map (S, S) or image (C, S, S) back to the slice grid (X, Y) or (X, Y, C)."""
        from dataclasses import replace

        from app.data.slices import from_model_slices

        g = self._prepared().geometry
        g1 = replace(g, volume_shape=(*g.volume_shape[:2], 1), slices=(0,))
        a = np.asarray(arr, dtype=np.float32)
        if a.ndim == 2:
            return from_model_slices(a[None], g1)[:, :, 0]
        out = from_model_slices(a[None], g1)[:, :, 0]  # (X, Y, C)
        return out[..., 0] if out.shape[-1] == 1 else out

    def volume_to_grid(self, maps: np.ndarray) -> np.ndarray:
        """(N, S, S) maps of all slices -> (X, Y, Z) on the study's canonical grid."""
        from app.data.pipeline import to_study_grid

        return to_study_grid(maps, self._prepared().geometry)

    def detection_mask(self, d: np.ndarray, tau: float, min_component_px: int = 0) -> np.ndarray:
        """D > tau on the study grid -- a whole volume (X, Y, Z) or one axial slice (X, Y) -- without in-plane
        components smaller than ``min_component_px`` model pixels: the rule ``detect`` applies
        (:func:`app.core.maps.study_detection_mask`), so a slice shows what the saved mask holds there."""
        from app.core.maps import study_detection_mask

        if not min_component_px:
            return np.asarray(d) > tau
        g = self._prepared().geometry
        d = np.asarray(d)
        if d.ndim == 2:
            return study_detection_mask(d[:, :, None], tau, g, min_component_px)[:, :, 0]
        return study_detection_mask(d, tau, g, min_component_px)

    def volume_map_to_grid(self, d: np.ndarray) -> np.ndarray:
        """(N, S, S) difference maps -> (X, Y, Z), zero outside the brain mask where one was found (as ``detect``
        does: the scalp is never flagged)."""
        from app.data.pipeline import restrict_map_to_brain

        return restrict_map_to_brain(self.volume_to_grid(d), self._prepared())
