"""The viewer state: what is shown (study, slice, model, eps, tau, window/level, +MG, overlay opacity).

A plain object, like a napari model or an FSLeyes display context: widgets observe it through
``state.events.<field>.connect(callback)`` and change it by assignment; values are validated (clamped) here,
once, whatever widget or test sets them. Setting a field to its current value emits nothing, so widgets that
mirror a field do not loop.
"""

from __future__ import annotations

import math
from typing import Any

from app.errors import OptionError
from app.viewer.events import EmitterGroup

#: window/level presets (width, level) in the study's raw units; "brain MRI" is relative to the volume's
#: robust range (MRI has no absolute units), the CT ones are the usual Hounsfield windows.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "CT soft tissue": (400.0, 40.0),
    "CT bone": (2000.0, 400.0),
    "CT brain": (80.0, 40.0),
}
PRESET_NAMES = ("Brain MRI", *CT_PRESETS)


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


class ViewerState:
    """Observable fields (each has an emitter ``events.<name>``):

    study, gt, slice_index, eps, eps_max, tau, window, model_name, use_mg, overlay_opacity, show_brain, busy,
    message. ``show_brain``: outline the brain mask the study was prepared with on every panel.
    """

    _FIELDS = (
        "study",
        "gt",
        "slice_index",
        "eps",
        "eps_max",
        "tau",
        "window",
        "model_name",
        "use_mg",
        "overlay_opacity",
        "show_brain",
        "busy",
        "message",
    )

    def __init__(self) -> None:
        object.__setattr__(self, "events", EmitterGroup(*self._FIELDS))
        d = object.__getattribute__(self, "__dict__")
        d.update(
            study=None,  # app.viewer.slices.StudySlices
            gt=None,  # bool (X, Y, Z) on the study grid, or None
            slice_index=0,
            eps=0.1,
            eps_max=0.6,
            tau=0.2,
            window=(1.0, 0.5),  # (width, level)
            model_name=None,
            use_mg=True,
            overlay_opacity=0.6,
            show_brain=False,
            busy=False,
            message="",
        )

    @property
    def n_slices(self) -> int:
        return 0 if self.study is None else self.study.n_slices

    def _validate(self, name: str, value: Any) -> Any:
        if name == "slice_index":
            n = self.n_slices
            return int(_clamp(int(value), 0, max(n - 1, 0)))
        if name in ("eps", "eps_max", "tau", "overlay_opacity"):
            v = float(value)
            if not math.isfinite(v):
                raise OptionError(f"{name} must be a finite number, got {value!r}")
            if name == "eps":
                return _clamp(v, 0.0, self.eps_max)
            if name == "eps_max":
                if v <= 0:
                    raise OptionError("the eps range must be positive")
                return v
            return _clamp(v, 0.0, 1.0)
        if name == "window":
            w, lvl = (float(value[0]), float(value[1]))
            if not (math.isfinite(w) and math.isfinite(lvl)):
                raise OptionError("window/level must be finite")
            return (max(w, 1e-6), lvl)
        if name in ("use_mg", "busy", "show_brain"):
            return bool(value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._FIELDS:
            raise AttributeError(f"ViewerState has no field {name!r}")
        value = self._validate(name, value)
        old = self.__dict__.get(name)
        same = old is value
        if not same and name not in ("study", "gt"):
            try:
                same = bool(old == value)
            except Exception:  # arrays and the like: identity only
                same = False
        if same:
            return
        self.__dict__[name] = value
        if name == "eps_max" and self.eps > value:
            self.eps = value
        if name == "study":
            # a new study: its most telling slice (largest ground-truth lesion, else the middle)
            start = getattr(value, "initial_slice", self.n_slices // 2) if value is not None else 0
            self.__dict__["slice_index"] = self._validate("slice_index", start)
        getattr(self.events, name).emit(value)
        if name == "study":
            self.events.slice_index.emit(self.slice_index)

    # --- window/level -------------------------------------------------------------------------------------------
    @property
    def levels(self) -> tuple[float, float]:
        """(low, high) display range for the current window."""
        w, lvl = self.window
        return (lvl - w / 2.0, lvl + w / 2.0)

    def apply_preset(self, name: str) -> None:
        if name in CT_PRESETS:
            self.window = CT_PRESETS[name]
        elif name == "Brain MRI":
            if self.study is None:
                return
            lo, hi = self.study.robust_range
            self.window = (hi - lo, (hi + lo) / 2.0)
        else:
            raise OptionError(f"unknown window preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")

    def drag_window(self, dx: float, dy: float) -> None:
        """Right-drag as in radiology viewers: right widens the window, up raises the level (pixels of drag
        scaled to the volume's intensity range)."""
        if self.study is None:
            return
        lo, hi = self.study.robust_range
        scale = max(hi - lo, 1e-6) / 300.0
        w, lvl = self.window
        self.window = (w * math.exp(dx / 200.0), lvl - dy * scale)
