"""The viewer's Qt-free model: state, orientation, study slices, per-slice results and the cache."""

import subprocess
import sys

import numpy as np
import pytest
from viewer_study import write_model, write_study


def test_state_validates_and_notifies_once():
    from app.viewer.state import ViewerState

    s = ViewerState()
    seen = []
    s.events.tau.connect(seen.append)
    s.tau = 0.3
    s.tau = 0.3  # unchanged: no event
    s.tau = 7.0  # clamped to [0, 1]
    assert seen == [0.3, 1.0]
    s.eps_max = 0.5
    s.eps = 0.9
    assert s.eps == 0.5
    s.eps_max = 0.2  # shrinking the range pulls eps in
    assert s.eps == 0.2
    with pytest.raises(AttributeError):
        s.nonsense = 1
    from app.errors import OptionError

    with pytest.raises(OptionError):
        s.tau = float("nan")
    with pytest.raises(OptionError):
        s.apply_preset("Cardiac")


def test_state_presets_and_levels():
    from app.viewer.state import ViewerState

    s = ViewerState()
    s.apply_preset("CT soft tissue")
    assert s.window == (400.0, 40.0) and s.levels == (-160.0, 240.0)


def test_state_imports_no_qt():
    code = (
        "import sys, app.viewer.state, app.viewer.compute, app.viewer.slices, app.viewer.loading, app.viewer.overlay, "
        "app.figure; "
        "assert not any(m.startswith(('PySide6', 'pyqtgraph', 'qasync')) for m in sys.modules), 'Qt imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_radiological_orientation():
    from app.viewer.slices import ORIENTATION_LETTERS, to_pyqtgraph, to_screen

    a = np.zeros((5, 4))
    a[4, 3] = 1  # the voxel furthest Right (x high) and Anterior (y high)
    scr = to_screen(a)
    assert scr.shape == (4, 5) and scr[0, 0] == 1  # top-left: anterior and patient right
    assert ORIENTATION_LETTERS == ("R", "L", "A", "P")
    pg = to_pyqtgraph(a)
    assert pg[0, 3] == 1  # pyqtgraph: x to the right, y up -> patient right at x=0, anterior at the top


@pytest.fixture
def slices(tmp_path):
    from app.viewer.loading import open_study

    study, mask = write_study(tmp_path)
    return open_study(study, mask)


def test_study_slices_model_round_trip(slices):
    from app.viewer.slices import ModelInput

    assert slices.n_slices == 6 and slices.slice_shape == (40, 48)
    assert slices.gt.dtype == bool and slices.gt[:, :, 3].any() and not slices.gt[:, :, 0].any()
    s = slices.with_model(ModelInput(32))
    x = s.model_slices()
    assert x.shape == (6, 1, 32, 32) and 0 <= x.min() and x.max() <= 1
    # a model-space map of the slice itself comes back close to the normalised slice
    back = s.to_slice_grid(x[3, 0])
    norm = s.normalized()[:, :, 3]
    assert back.shape == (40, 48)
    assert np.corrcoef(back.ravel(), norm.ravel())[0, 1] > 0.9
    vol = s.volume_to_grid(x[:, 0])
    assert vol.shape == (40, 48, 6)
    np.testing.assert_allclose(vol[:, :, 3], back, atol=1e-5)


def test_mask_on_another_grid_is_refused(slices, tmp_path):
    from app.errors import StudyError

    with pytest.raises(StudyError):
        slices.check_mask(np.zeros((10, 10, 6)))


def test_demo_paths_finds_study_and_mask(tmp_path):
    from app.errors import StudyError
    from app.viewer.loading import demo_paths

    with pytest.raises(StudyError, match="no demo study"):
        demo_paths(tmp_path / "missing")
    study, mask = write_study(tmp_path / "demo")
    assert demo_paths(tmp_path / "demo") == (study, mask)


def test_card_choices_and_fallbacks():
    from app.nets.card import FALLBACK_EPS_RANGE, card_choices

    c = card_choices({"eps_range": [0.0, 0.4], "chosen": {"eps": 0.9, "tau": 0.12}})
    assert c == {"eps_min": 0.0, "eps_max": 0.4, "eps": 0.4, "tau": 0.12, "tau_base": 0.12}
    c = card_choices({})
    assert c["eps_max"] == FALLBACK_EPS_RANGE[1] and c["eps"] == 0.1 and c["tau"] == 0.2
    # the zoo's calibrated cards: a dict with eps_max and the grid searched on validation
    card = {
        "eps_range": {"eps_max": 100.0, "grid": [0.0, 50.0, 100.0], "rule": "..."},
        "chosen": {"eps": 66.666667, "tau": 0.225, "tau_base": 0.195},
    }
    c = card_choices(card)
    assert c == {"eps_min": 0.0, "eps_max": 100.0, "eps": 66.666667, "tau": 0.225, "tau_base": 0.195}
    assert card_choices({"eps_range": {"grid": [0.0, 2.0, 4.0]}})["eps_max"] == 4.0
    for bad in ({"eps_range": "wide"}, {"eps_range": {"eps_max": -1}}, {"eps_range": [0, float("nan")]}):
        assert card_choices(bad)["eps_max"] == FALLBACK_EPS_RANGE[1]
    assert card_choices({"chosen": {"tau": "high"}})["tau"] == 0.2
    from app.nets.card import card_eps_grid

    assert card_eps_grid(card) == [0.0, 50.0, 100.0]
    assert card_eps_grid({"eps_range": [0, 1]}) == [] and card_eps_grid({}) == []


def test_session_solves_like_the_detector(slices, tmp_path):
    """The viewer's slice result is the Detector's result mapped to the slice grid (same post-processing)."""
    import torch

    from app.viewer.compute import ModelSession

    write_model(tmp_path / "m", "tiny")
    from app.core.matchgen import SolverOptions

    sess = ModelSession.load(str(tmp_path / "m" / "tiny"), slices, "cpu")
    assert sess.name == "tiny"
    sess.detector.solver = SolverOptions(max_steps=40)  # bounded work; the comparison holds for any options
    seen = []
    r = sess.solve_slice(3, 0.2, on_progress=seen.append, progress_interval_s=0.0)
    out = sess.detector.run(sess.slices.model_slices([3]), 0.2)
    np.testing.assert_allclose(r.d, sess.slices.to_slice_grid(out.d[0]), atol=1e-5)
    assert r.steps == int(out.steps[0]) and r.final
    assert seen and all(not p.final for p in seen)
    base = sess.solve_slice(3, 0.0)
    with torch.no_grad():
        s0 = sess.detector.model.pseudo_normal(torch.from_numpy(sess.slices.model_slices([3])))
    np.testing.assert_allclose(base.s, sess.slices.to_slice_grid(s0[0].numpy()), atol=1e-5)
    # the grid in one batched solve: every value is the cold start that asking for it alone gives
    got = []
    sess.precompute(3, [0.3, 0.0, 0.2], got.append)
    assert [g.eps for g in got] == [0.2, 0.3] and all(g.precomputed and g.final for g in got)
    np.testing.assert_allclose(got[0].d, r.d, atol=1e-5)
    assert got[0].steps == r.steps
    np.testing.assert_allclose(got[1].d, sess.solve_slice(3, 0.3).d, atol=1e-5)


def test_result_cache_is_bounded_by_memory_lru():
    """The budget is bytes of the results' arrays: a volume's worth of 512x512 results cannot grow it."""
    from app.viewer.compute import ResultCache, SliceResult

    z = np.zeros((8, 8), np.float32)  # s + d = 512 bytes per result
    c = ResultCache(max_bytes=3 * 512)
    for e in (0.0, 0.1, 0.2):
        c.put(SliceResult("m", 1, e, z, z))
    assert len(c) == 3 and c.nbytes == 3 * 512
    c.get("m", 1, 0.0)
    c.put(SliceResult("m", 1, 0.3, z, z))  # drops the least recently used (0.1)
    assert c.get("m", 1, 0.1) is None and c.get("m", 1, 0.0) is not None and len(c) == 3
    assert c.nbytes == 3 * 512
    c.put(SliceResult("m", 1, 0.3, z, z))  # replacing an entry does not count it twice
    assert c.nbytes == 3 * 512 and len(c) == 3
    big = np.zeros((512, 512), np.float32)  # 2 MiB per result: one result is over the budget
    for k in range(40):  # a whole-volume run's worth
        c.put(SliceResult("m", k, 0.2, big, big))
    assert len(c) == 1 and c.nbytes == 2 * big.nbytes  # only the newest is kept, however large
    assert c.get("m", 39, 0.2) is not None
    c = ResultCache(max_bytes=64 * 2**20)
    for k in range(300):
        c.put(SliceResult("m", k, 0.2, big, big))
    assert c.nbytes <= 64 * 2**20 and len(c) == 32 and c.keys()[0] == ("m", 268, 0.2)
    c.clear()
    assert c.nbytes == 0 and len(c) == 0


def test_detection_overlay_colours_and_dice():
    from app.viewer.overlay import detection_overlay

    d = np.array([[0.9, 0.9], [0.1, 0.1]])
    gt = np.array([[True, False], [True, False]])
    rgba, dsc = detection_overlay(d, 0.5, gt, 0.5)
    assert dsc == pytest.approx(0.5)  # 2*1 / (2 + 2)
    assert rgba[0, 0].tolist() == [255, 0, 0, 128]  # TP red
    assert rgba[0, 1].tolist() == [0, 0, 255, 128]  # FP blue
    assert rgba[1, 0].tolist() == [0, 255, 0, 128]  # FN green
    assert rgba[1, 1].tolist() == [0, 0, 0, 0]  # TN transparent
    rgba, dsc = detection_overlay(d, 0.5, None, 1.0)
    assert dsc is None and rgba[..., 3].tolist() == [[255, 255], [0, 0]] and rgba[0, 0, 0] == 255


def test_session_uses_the_solver_the_card_was_calibrated_with(slices, tmp_path):
    """A validation choice is applied with the solver (and step budget) it was made with."""
    import json

    from app.viewer.compute import ModelSession

    write_model(tmp_path / "m", "tiny")
    card_path = tmp_path / "m" / "tiny.json"
    card = json.loads(card_path.read_text())
    card["calibration"] = {"settings": {"max_steps": 7, "solver_options": {"method": "spg", "precision": "fp32"}}}
    card_path.write_text(json.dumps(card))
    sess = ModelSession.load(str(tmp_path / "m" / "tiny"), slices, "cpu")
    assert sess.detector.solver.method == "spg" and sess.detector.solver.max_steps == 7
    r = sess.solve_slice(3, 0.5)
    assert r.steps <= 7
