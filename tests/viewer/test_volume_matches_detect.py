"""One pipeline: the viewer's saved whole-volume mask is identical to ``python main.py detect``'s for the same model,
eps and tau (the card's solver, empty slices skipped, the same post-processing and the same way back to the study's
grid), although the viewer solves in batches of 16 for its progress bar and ``detect`` in batches of 32."""

import json

import nibabel as nib
import numpy as np
import pytest
from viewer_study import make_volume, write_model

from app.viewer.controller import VOLUME_BATCH, ViewerController
from app.viewer.jobs import ManualLane


@pytest.fixture
def case(tmp_path):
    vol, mask = make_volume((36, 40, 40))
    vol[:, :, :3] = 0  # empty slices (air): skipped by both
    affine = np.array([[-1.5, 0, 0, 20], [0, 1.5, 0, -10], [0, 0, 2.5, 5], [0, 0, 0, 1]])  # not RAS-canonical
    study = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(study))
    write_model(tmp_path / "models", "tiny")
    # a calibrated card: its choices were made with the spectral projected gradient solver and a step budget,
    # which both must apply (the paper's penalty method would give other masks)
    card_path = tmp_path / "models" / "tiny.json"
    card = json.loads(card_path.read_text())
    card["calibration"] = {"settings": {"max_steps": 30, "solver_options": {"method": "spg"}}}
    card["postprocess"] = {"median_size": 3, "erode_px": 1, "min_component_px": 6}  # and its post-processing
    card_path.write_text(json.dumps(card))
    return {"study": study, "model": str(tmp_path / "models" / "tiny"), "tmp": tmp_path}


def viewer_mask(case, out, use_mg=True, eps=None, tau=None):
    lanes = {n: ManualLane(n) for n in ("slice", "volume", "export", "load")}
    ctl = ViewerController(lanes=lanes, device="cpu", precompute_eps_grid=False)
    assert ctl.set_model(case["model"])
    ctl.open_study(case["study"])
    lanes["load"].run()
    ctl.state.use_mg = use_mg
    if eps is not None:
        ctl.state.eps = eps
    if tau is not None:
        ctl.state.tau = tau
    ctl.save_mask(str(out))
    lanes["volume"].run()
    assert out.exists(), ctl.state.message
    return ctl


def same_nifti(a, b):
    ia, ib = nib.load(str(a)), nib.load(str(b))
    assert ia.shape == ib.shape
    np.testing.assert_array_equal(ia.affine, ib.affine)
    assert ia.get_data_dtype() == ib.get_data_dtype()
    da, db = np.asarray(ia.dataobj), np.asarray(ib.dataobj)
    np.testing.assert_array_equal(da, db)
    return da


@pytest.mark.parametrize(
    "use_mg, eps, tau, args",
    [
        (True, None, None, []),  # the card's eps and tau, as both read them
        (False, None, None, ["--base-only"]),  # the base model with the card's tau_base, as both read it
        (True, 0.35, 0.12, ["--eps", "0.35", "--tau", "0.12"]),
    ],
)
def test_viewer_whole_volume_mask_is_identical_to_detect(case, use_mg, eps, tau, args, capsys):
    from app.cli import main

    ours = case["tmp"] / "viewer.nii.gz"
    ctl = viewer_mask(case, ours, use_mg=use_mg, eps=eps, tau=tau)
    theirs = case["tmp"] / "detect.nii.gz"
    cmd = ["detect", str(case["study"]), "--model", case["model"], "--out", str(theirs), "--device", "cpu", *args]
    capsys.readouterr()
    assert main(cmd) == 0
    m = same_nifti(ours, theirs)
    assert 0 < np.count_nonzero(m) < m.size  # a mask with something in it, not trivially equal
    # detect's last line: the findings of that mask, the most suspicious first, as the viewer's findings list has it
    from app.core.findings import findings_summary
    from app.viewer.findings import FindingsList

    study = ctl.state.study.study
    canon = np.asanyarray(nib.as_closest_canonical(nib.load(str(theirs))).dataobj) > 0
    fl = FindingsList.from_volume(np.where(canon, ctl.volume.d, 0), 0.0, study.affine)
    assert len(fl) > 0 and capsys.readouterr().out.splitlines()[-1] == findings_summary(fl.findings)
    # the detection the viewer draws and lists its findings from (ctl.volume_detection: the card's component rule)
    shown = ctl.volume_detection()
    np.testing.assert_array_equal(shown, canon)
    listed = FindingsList.from_volume(ctl.volume.d, ctl.state.tau, study.affine, mask=shown)
    assert findings_summary(listed.findings) == findings_summary(fl.findings)
    assert len(FindingsList.from_volume(ctl.volume.d, ctl.state.tau, study.affine)) >= len(listed)  # D > tau alone
    assert fl.findings[0].max_d == max(f.max_d for f in fl.findings)
    assert ctl.volume.d.shape[2] == 40 > 32 > VOLUME_BATCH  # the batches differ, the answer does not
    det = ctl.session.detector
    assert det.solver.method == "spg" and det.solver.max_steps == 30 and det.post.median_size == 3
    assert det.post.erode_px == 1 and det.post.min_component_px == 6
    if eps is None:  # the card's
        assert ctl.state.eps == pytest.approx(0.2) and ctl.state.tau == pytest.approx(0.15 if use_mg else 0.2)


def test_z_window_is_the_same_in_detect_the_volume_run_and_a_single_slice(case, capsys):
    """A card with a z window (D averaged over neighbouring axial slices): the viewer's whole-volume mask is still
    detect's, the window spans the slices its mm say at this study's spacing, it changes the maps, and a
    single-slice solve (which solves the window together) shows the volume run's D on that slice."""
    from app.cli import main

    card_path = case["tmp"] / "models" / "tiny.json"
    card = json.loads(card_path.read_text())
    plain_ctl = viewer_mask(case, case["tmp"] / "plain.nii.gz")
    plain = plain_ctl.volume.d.copy()
    card["postprocess"]["z_mm"] = 7.5  # 3 slices at 2.5 mm
    card_path.write_text(json.dumps(card))
    ours = case["tmp"] / "viewer-z.nii.gz"
    ctl = viewer_mask(case, ours)
    theirs = case["tmp"] / "detect-z.nii.gz"
    assert main(["detect", str(case["study"]), "--model", case["model"], "--out", str(theirs), "--device", "cpu"]) == 0
    m = same_nifti(ours, theirs)
    assert 0 < np.count_nonzero(m) < m.size
    sess = ctl.session
    assert sess.detector.post.z_mm == 7.5 and sess.detector.post.z_slices(sess.slices.slice_mm) == 3
    vol = ctl.volume.d
    assert not np.allclose(vol, plain)  # the window changes the maps
    # on the study grid the window is the mean of the plain maps of three neighbours, inside slice k's foreground
    k = 20
    inside = vol[:, :, k] > 0
    np.testing.assert_allclose(vol[:, :, k][inside], plain[:, :, k - 1 : k + 2].mean(axis=2)[inside], atol=1e-5)
    r = sess.solve_slice(k, ctl.state.eps)
    assert inside.sum() > 50
    np.testing.assert_allclose(r.d[inside], vol[:, :, k][inside], atol=1e-5)


def test_a_shrinking_z_window_is_the_same_in_detect_the_volume_run_and_a_single_slice(case):
    """``z_edge: "shrink"``: at the last slice of the volume D is the mean of the plain maps of the window's
    slices inside the volume (37-39 of a 5-slice window), in detect, the viewer's volume run and a single-slice
    solve alike; the card's default ("nearest") gives another D there and the same inside the volume."""
    from app.cli import main

    card_path = case["tmp"] / "models" / "tiny.json"
    card = json.loads(card_path.read_text())
    plain = viewer_mask(case, case["tmp"] / "plain.nii.gz").volume.d.copy()
    card["postprocess"]["z_mm"] = 12.5  # 5 slices at 2.5 mm
    card_path.write_text(json.dumps(card))
    nearest = viewer_mask(case, case["tmp"] / "nearest.nii.gz").volume.d.copy()
    card["postprocess"]["z_edge"] = "shrink"
    card_path.write_text(json.dumps(card))
    ours = case["tmp"] / "viewer-shrink.nii.gz"
    ctl = viewer_mask(case, ours)
    theirs = case["tmp"] / "detect-shrink.nii.gz"
    assert main(["detect", str(case["study"]), "--model", case["model"], "--out", str(theirs), "--device", "cpu"]) == 0
    same_nifti(ours, theirs)
    assert ctl.session.detector.post.z_edge == "shrink"
    vol, k = ctl.volume.d, 39
    inside = vol[:, :, k] > 0
    assert inside.sum() > 50
    np.testing.assert_allclose(vol[:, :, k][inside], plain[:, :, 37:40].mean(axis=2)[inside], atol=1e-5)
    assert not np.allclose(vol[:, :, k][inside], nearest[:, :, k][inside], atol=1e-4)  # the end slice differs
    np.testing.assert_allclose(vol[:, :, 20], nearest[:, :, 20], atol=1e-6)  # inside the volume: the same mean
    r = ctl.session.solve_slice(k, ctl.state.eps)
    np.testing.assert_allclose(r.d[inside], vol[:, :, k][inside], atol=1e-5)


def test_the_next_slice_reuses_its_neighbours_maps_and_answers_the_same(case):
    """With a z window a slice request solves the window; the next slice's request solves only the one neighbour
    the earlier window lacked (the rest, itself included, come from the session's cache of solved slices), and
    answers what a session without that cache answers; a slice whose whole window is known solves nothing.
    Another study starts with an empty cache."""
    from app.io import load_study
    from app.viewer.compute import ModelSession
    from app.viewer.slices import StudySlices

    card_path = case["tmp"] / "models" / "tiny.json"
    card = json.loads(card_path.read_text())
    card["postprocess"]["z_mm"] = 12.5  # 5 slices at 2.5 mm
    card_path.write_text(json.dumps(card))
    slices = StudySlices(load_study(case["study"]))
    sess = ModelSession.load(case["model"], slices, device="cpu")
    sess.slices.prepare()
    sizes = []
    solve = sess.detector.solve_batch

    def spy(x, eps, **kw):
        sizes.append(int(x.shape[0]))
        return solve(x, eps, **kw)

    sess.detector.solve_batch = spy
    eps = sess.choices["eps"]
    first = sess.solve_slice(20, eps)
    nxt = sess.solve_slice(21, eps)
    assert sizes == [5, 1]  # slices 18-22, then 23 only
    again = sess.solve_slice(20, eps)  # 18-22 all known: no solve, the first answer
    assert sizes == [5, 1] and again.loss == first.loss and again.steps == first.steps
    np.testing.assert_array_equal(again.d, first.d)
    np.testing.assert_array_equal(again.s, first.s)
    fresh = ModelSession.load(case["model"], slices, device="cpu").solve_slice(21, eps)
    # the same answer up to float rounding (the batch's size changes the convolutions' summation order)
    np.testing.assert_allclose(nxt.d, fresh.d, atol=1e-6)
    np.testing.assert_allclose(nxt.s, fresh.s, atol=1e-6)
    assert nxt.loss == pytest.approx(fresh.loss, abs=1e-6) and nxt.steps == fresh.steps
    assert len(sess.bind(slices)._plain) == 0 < len(sess._plain)


def test_an_ensemble_card_in_the_viewer_is_detects_on_the_volume_and_on_a_slice(case, capsys):
    """An ensemble card (two copies of the tiny model, scales c and c / 3, a z window): the viewer's whole-volume
    mask is detect's with the same card, and a single slice's D (its window solved through the ensemble) is the
    volume run's on that slice."""
    import shutil

    from viewer_study import write_ensemble

    from app.cli import main
    from app.core.ensemble import EnsembleDetector

    models = case["tmp"] / "models"
    for suffix in (".json", ".safetensors"):
        shutil.copy((models / "tiny").with_suffix(suffix), (models / "copy").with_suffix(suffix))
    post = {"median_size": 3, "erode_px": 1, "min_component_px": 6, "z_mm": 7.5}
    write_ensemble(models / "pair.json", [(models / "tiny", 0.3), (models / "copy", 0.1)], eps=0.2, tau=0.3,
                   tau_base=0.4, post=post)  # fmt: skip
    pair = {**case, "model": str(models / "pair")}
    ours = case["tmp"] / "viewer-pair.nii.gz"
    ctl = viewer_mask(pair, ours)
    assert isinstance(ctl.session.detector, EnsembleDetector) and ctl.state.eps == 1.0 and ctl.state.tau == 0.3
    assert ctl.session.pseudo_normal_from == str(models / "tiny")  # the panel shows the first member's image
    theirs = case["tmp"] / "detect-pair.nii.gz"
    assert main(["detect", str(case["study"]), "--model", pair["model"], "--out", str(theirs), "--device", "cpu"]) == 0
    m = same_nifti(ours, theirs)
    assert 0 < np.count_nonzero(m) < m.size
    vol = ctl.volume.d
    k = 20
    inside = vol[:, :, k] > 0
    assert inside.sum() > 50
    r = ctl.session.solve_slice(k, 1.0)
    # the window is solved as a batch of its own slices, the volume in batches of 16: oneDNN's float rounding depends
    # on the batch and the two members' solver steps carry it on (up to 1.1e-5 on an AVX2-only CPU); eps 0.7
    # instead of 1 differs by up to 7.6e-4, on half the pixels by more than 1e-4
    np.testing.assert_allclose(r.d[inside], vol[:, :, k][inside], atol=1e-4)
    assert r.s.shape == vol[:, :, k].shape  # the first member's pseudo-normal, on the slice's grid
