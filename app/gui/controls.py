"""The control panel beside the images: model, +MG, eps, tau, overlay opacity, window presets, slice, whole-volume
run. Every control mirrors one field of :class:`app.viewer.state.ViewerState` both ways."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.viewer.state import PRESET_NAMES, ViewerState


class FloatSlider(QWidget):
    """A slider and a numeric field for one float in [lo, hi]; ``valueChanged`` fires on user edits only."""

    valueChanged = Signal(float)  # noqa: N815 - Qt naming

    def __init__(self, lo: float, hi: float, steps: int = 100, decimals: int = 3, parent=None):
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.spin = QDoubleSpinBox()
        self.spin.setDecimals(decimals)
        self.spin.setKeyboardTracking(False)
        self.spin.setFixedWidth(76)
        self._steps = steps
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.spin)
        self.set_range(lo, hi)
        self.slider.valueChanged.connect(lambda i: self.valueChanged.emit(self._lo + i * self._step_size))
        self.spin.valueChanged.connect(lambda v: self.valueChanged.emit(float(v)))

    def set_range(self, lo: float, hi: float) -> None:
        self._lo, self._hi = float(lo), float(hi)
        self._step_size = (self._hi - self._lo) / self._steps
        self.slider.blockSignals(True)
        self.spin.blockSignals(True)
        self.slider.setRange(0, self._steps)
        self.spin.setRange(self._lo, self._hi)
        self.spin.setSingleStep(self._step_size)
        self.slider.blockSignals(False)
        self.spin.blockSignals(False)

    @property
    def step_size(self) -> float:
        return self._step_size

    def grid(self) -> list[float]:
        """The values the slider can take (precomputed when the card names no grid)."""
        return [self._lo + i * self._step_size for i in range(self._steps + 1)]

    def set_value(self, v: float) -> None:
        self.slider.blockSignals(True)
        self.spin.blockSignals(True)
        self.slider.setValue(round((v - self._lo) / self._step_size) if self._step_size > 0 else 0)
        self.spin.setValue(v)
        self.slider.blockSignals(False)
        self.spin.blockSignals(False)

    def value(self) -> float:
        return float(self.spin.value())


class ControlPanel(QWidget):
    run_volume = Signal()
    cancel_volume = Signal()
    save_mask = Signal()
    model_chosen = Signal(str)

    def __init__(self, state: ViewerState, parent=None, eps_steps: int = 30):
        super().__init__(parent)
        self.state = state
        self.setMinimumWidth(270)
        self.setMaximumWidth(340)
        outer = QVBoxLayout(self)

        box = QGroupBox("Model")
        f = QFormLayout(box)
        self.model_box = QComboBox()
        self.model_box.setToolTip("models in models/ (MATCHGEN_MODELS overrides the folder)")
        f.addRow("Model", self.model_box)
        self.mg_check = QCheckBox("+MG (MatchGen)")
        self.mg_check.setToolTip("off: the base model alone; on: MatchGen's matched pseudo-normal (M)")
        f.addRow(self.mg_check)
        self.eps = FloatSlider(0.0, state.eps_max, steps=eps_steps)
        self.eps.setToolTip(
            "eps: how far MatchGen may move the latent from the encoder's (, / .); where the model card scales eps by "
            "the brain area (the dae), the eps of a slice with the card's reference brain area; for an ensemble (the "
            "default dae+dae-cover-base+ae-l1), a factor of each member's own eps (1: the card's choice; a member "
            "at eps 0 always reads its base map)"
        )
        f.addRow("eps", self.eps)
        self.tau = FloatSlider(0.0, 1.0, steps=200)
        self.tau.setToolTip("tau: detection threshold on the difference map ([ / ])")
        f.addRow("tau", self.tau)
        outer.addWidget(box)

        box = QGroupBox("Display")
        f = QFormLayout(box)
        self.opacity = FloatSlider(0.0, 1.0, steps=20, decimals=2)
        f.addRow("Overlay", self.opacity)
        self.preset_box = QComboBox()
        self.preset_box.addItem("Window preset...")
        self.preset_box.addItems(PRESET_NAMES)
        f.addRow("W/L", self.preset_box)
        self.wl_label = QLabel("-")
        f.addRow("", self.wl_label)
        self.brain_check = QCheckBox("Brain mask outline")
        self.brain_check.setToolTip("outline the brain mask the study was prepared with on every panel (B)")
        f.addRow(self.brain_check)
        sl = QWidget()
        h = QHBoxLayout(sl)
        h.setContentsMargins(0, 0, 0, 0)
        self.slice_slider = QSlider(Qt.Orientation.Horizontal)
        self.slice_spin = QSpinBox()
        self.slice_spin.setFixedWidth(64)
        h.addWidget(self.slice_slider, 1)
        h.addWidget(self.slice_spin)
        f.addRow("Slice", sl)
        outer.addWidget(box)

        box = QGroupBox("Result")
        v = QVBoxLayout(box)
        self.dice_label = QLabel("Dice: -")
        self.dice_label.setStyleSheet("font-size: 15pt; font-weight: bold;")
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        v.addWidget(self.dice_label)
        v.addWidget(self.info_label)
        outer.addWidget(box)

        box = QGroupBox("Whole volume")
        v = QVBoxLayout(box)
        row = QHBoxLayout()
        self.run_button = QPushButton("Run on volume")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        v.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        v.addWidget(self.progress)
        self.save_button = QPushButton("Save mask (NIfTI)...")
        v.addWidget(self.save_button)
        outer.addWidget(box)
        outer.addStretch(1)

        # widgets -> state
        self.mg_check.toggled.connect(lambda b: setattr(state, "use_mg", b))
        self.brain_check.toggled.connect(lambda b: setattr(state, "show_brain", b))
        self.eps.valueChanged.connect(lambda v: setattr(state, "eps", v))
        self.tau.valueChanged.connect(lambda v: setattr(state, "tau", v))
        self.opacity.valueChanged.connect(lambda v: setattr(state, "overlay_opacity", v))
        self.slice_slider.valueChanged.connect(lambda k: setattr(state, "slice_index", k))
        self.slice_spin.valueChanged.connect(lambda k: setattr(state, "slice_index", k))
        self.preset_box.activated.connect(self._preset)
        self.model_box.activated.connect(lambda i: self.model_chosen.emit(self.model_box.itemText(i)))
        self.run_button.clicked.connect(self.run_volume)
        self.cancel_button.clicked.connect(self.cancel_volume)
        self.save_button.clicked.connect(self.save_mask)
        # state -> widgets
        ev = state.events
        ev.use_mg.connect(self._sync_mg)
        ev.show_brain.connect(self._sync_brain)
        ev.eps.connect(self.eps.set_value)
        ev.eps_max.connect(lambda hi: (self.eps.set_range(0.0, hi), self.eps.set_value(state.eps)))
        ev.tau.connect(self.tau.set_value)
        ev.overlay_opacity.connect(self.opacity.set_value)
        ev.slice_index.connect(self._sync_slice)
        ev.study.connect(lambda _s: self._sync_slice(state.slice_index))
        ev.window.connect(self._sync_window)
        ev.model_name.connect(self._sync_model)
        self._sync_all()

    def _sync_all(self) -> None:
        s = self.state
        self._sync_mg(s.use_mg)
        self._sync_brain(s.show_brain)
        self.eps.set_range(0.0, s.eps_max)
        self.eps.set_value(s.eps)
        self.tau.set_value(s.tau)
        self.opacity.set_value(s.overlay_opacity)
        self._sync_slice(s.slice_index)
        self._sync_window(s.window)

    def _sync_brain(self, b: bool) -> None:
        self.brain_check.blockSignals(True)
        self.brain_check.setChecked(b)
        self.brain_check.blockSignals(False)

    def _sync_mg(self, b: bool) -> None:
        self.mg_check.blockSignals(True)
        self.mg_check.setChecked(b)
        self.mg_check.blockSignals(False)
        self.eps.setEnabled(b)

    def _sync_slice(self, k: int) -> None:
        n = max(self.state.n_slices - 1, 0)
        for w in (self.slice_slider, self.slice_spin):
            w.blockSignals(True)
            w.setRange(0, n)
            w.setValue(k)
            w.blockSignals(False)

    def _sync_window(self, wl) -> None:
        self.wl_label.setText(f"W {wl[0]:.4g}  L {wl[1]:.4g}")

    def _sync_model(self, name) -> None:
        i = self.model_box.findText(name or "")
        if i >= 0:
            self.model_box.setCurrentIndex(i)

    def set_models(self, names: list[str], current: str | None) -> None:
        self.model_box.clear()
        self.model_box.addItems(names)
        if current and current not in names:
            self.model_box.addItem(current)
        self._sync_model(current)

    def _preset(self, i: int) -> None:
        if i > 0:
            self.state.apply_preset(self.preset_box.itemText(i))
        self.preset_box.setCurrentIndex(0)

    def set_volume_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
