"""The GUI latency probes of ``bench speed`` (minimal pyqtgraph path), offscreen."""

import numpy as np
import pytest

from app.bench.gui_latency import stall_minimal, tau_update_minimal
from app.core.detector import Detector
from app.core.matchgen import SolverOptions

pytestmark = pytest.mark.gui


def test_tau_update_repaints_and_reports_a_median(qapp, rng):
    d = rng.random((256, 256)).astype(np.float32) * 0.5
    gt = d > 0.4
    res = tau_update_minimal(d, gt, repeats=8)
    assert res["tau_repeats"] == 8 and res["last_tau"] == 0.5
    # the overlay on screen after the last update is the detection at that tau (TP/FP/FN coloured), not stale
    assert res["overlay_coloured_px"] == int(np.count_nonzero((d > 0.5) | gt))
    assert res["tau_update_ms"] <= res["tau_update_ms_max"]  # the median of the timings is not above their max


def test_stall_meter_sees_the_worker_finish(qapp, tiny_ae, rng):
    det = Detector(tiny_ae, solver=SolverOptions(method="spg", max_steps=40, patience=10**6, rtol=0.0))
    x = rng.random((2, 1, 32, 32)).astype(np.float32)
    res = stall_minimal(det, x, eps=0.5)
    assert res["gui_stall_ticks"] > 0
    assert 0 <= res["gui_max_stall_ms"] < 10_000 and res["gui_stall_window_s"] < 60
