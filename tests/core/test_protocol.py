"""The evaluation protocol on a tiny model whose answers are known in closed form.

FlatModel: z is one number, decode(z) is the flat image z. Its encoder is deliberately bad (z_o = max(x)), so the
base model's pseudo-normal is the lesion intensity and its map cannot separate lesion from tissue. The L1
optimum of a flat image is the median intensity (the tissue, 0.5), so MatchGen with eps >= max(x) - 0.5 = 0.5
recovers the tissue exactly and finds the lesion perfectly; eps = 0.25 leaves both at 0.25 (no separation).
"""

import numpy as np
import pytest
import torch

from app.core.detector import Detector
from app.core.matchgen import SolverOptions
from app.core.protocol import (
    calibrate_eps_range,
    choose_intensity_baseline,
    choose_on_validation,
    compute_maps,
    eps_grid,
    evaluate_intensity_baseline,
    evaluate_on_test,
    intensity_maps,
    subset_indices,
)
from app.errors import OptionError
from app.nets.base import AnomalyModel, ModelConfig

S = 16


class FlatModel(AnomalyModel):
    family = "test-flat"

    def encode(self, x):
        return x.flatten(1).max(dim=1, keepdim=True).values

    def decode(self, z):
        return z.view(-1, 1, 1, 1).expand(-1, 1, S, S)


def slices(n=6, seed=0, lesion=1.0, with_normal=True):
    """Tissue at 0.5 everywhere, one square lesion per abnormal slice (sizes 2..5 px), plus one normal slice."""
    rng = np.random.default_rng(seed)
    imgs = np.full((n, 1, S, S), 0.5, np.float32)
    masks = np.zeros((n, S, S), np.uint8)
    for i in range(n - 1 if with_normal else n):
        k = 2 + i % 4
        r, c = rng.integers(1, S - k - 1, size=2)
        masks[i, r : r + k, c : c + k] = 1
        imgs[i, 0][masks[i] == 1] = lesion
    return imgs, masks


@pytest.fixture
def detector():
    opts = SolverOptions(method="projected", lr=0.02, max_steps=600, patience=10)
    return Detector(FlatModel(ModelConfig("test-flat", image_size=S)), "cpu", solver=opts, batch_size=4)


def test_maps_for_an_eps_grid_have_the_closed_form(detector):
    imgs, masks = slices()
    pm = compute_maps(detector, imgs, [0.6, 0.0, 0.25])
    assert sorted(pm.maps) == [0.0, 0.25, 0.6]
    abn = masks[:-1].astype(bool)
    # base: s = 1 (the max), map 0.5 on tissue and 0 on the lesion
    assert np.allclose(pm.maps[0.0][:-1][~abn], 0.5) and np.allclose(pm.maps[0.0][:-1][abn], 0.0)
    # eps = 0.25: s = 0.75 (the boundary towards the median) -> 0.25 everywhere
    assert np.allclose(pm.maps[0.25][:-1], 0.25, atol=2e-3)
    # eps = 0.6: s = 0.5 (the median) -> 0 on tissue, 0.5 on the lesion
    assert np.allclose(pm.maps[0.6][:-1][~abn], 0.0, atol=2e-3)
    assert np.allclose(pm.maps[0.6][:-1][abn], 0.5, atol=2e-3)
    assert np.allclose(pm.distance[0.6][:-1], 0.5, atol=2e-3)
    assert (pm.steps[0.0] == 0).all() and (pm.steps[0.6] > 0).all()


def test_grid_maps_are_the_cold_starts_that_detect_applies(detector):
    # a step budget too small to converge: a warm-started eps path would reach further than a cold start, so
    # validation would choose on maps that `detect` (cold, same budget) never produces
    imgs, _ = slices(n=7)
    grid = [0.0, 0.1, 0.3, 0.6]
    pm = compute_maps(detector, imgs, grid, max_steps=8)
    for e in grid:
        out = detector.run(imgs, e, max_steps=8)
        np.testing.assert_allclose(pm.maps[e], out.d, atol=1e-6)
        np.testing.assert_array_equal(pm.steps[e], out.steps)
    assert (pm.distance[0.6] < 0.45).all()  # 8 steps of lr 0.02 from z_o cannot reach the median


def test_eps_grid_is_even_plus_halvings_near_zero():
    assert eps_grid(0.6, 7, 0) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert eps_grid(0.6, 7, 2) == pytest.approx([0.0, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert eps_grid(60.0, 4, 1) == pytest.approx([0.0, 10.0, 20.0, 40.0, 60.0])


def test_choice_on_validation_picks_the_eps_that_recovers_the_tissue(detector):
    val = slices(seed=1)
    taus = np.round(np.linspace(0, 1, 21), 3)
    ch = choose_on_validation(detector, val, [0.25, 0.6], taus)
    assert ch.eps == 0.6
    assert ch.dice == pytest.approx(1.0)
    assert 0.0 <= ch.tau < 0.5  # smallest tau with Dice 1 is 0 (tissue map is ~0, lesion 0.5)
    assert ch.tau == pytest.approx(0.0, abs=0.051)
    # base model: predicting the tissue (tau < 0.5) is the best it can do; nothing above 0.5
    assert ch.base_dice < 0.3
    assert ch.eps_grid == [0.0, 0.25, 0.6]
    assert np.asarray(ch.table).shape == (3, 21)
    row = np.asarray(ch.table)[1]  # eps = 0.25: the map is 0.25 everywhere, all or nothing is flagged
    assert np.allclose(row[taus < 0.24], row[0]) and np.allclose(row[taus > 0.26], 0.0) and row[0] < 0.3
    assert ch.n_images == 5  # only abnormal slices enter the mean per-image Dice
    assert set(ch.as_dict()) >= {"eps", "tau", "dice", "base_tau", "base_dice", "table"}


def test_eps_zero_is_never_chosen_for_plus_mg(detector):
    val = slices(seed=1)
    with pytest.raises(OptionError):
        choose_on_validation(detector, val, [0.0], [0.1])


def test_evaluate_on_test_reports_perfect_and_base_scores(detector):
    test = slices(n=8, seed=2)
    mg = evaluate_on_test(detector, test, 0.6, 0.25)
    assert mg.dice_mean == pytest.approx(1.0) and mg.dice_std == pytest.approx(0.0)
    assert mg.ap_mean == pytest.approx(1.0)
    assert mg.pooled_dice == pytest.approx(1.0) and mg.pooled_ap == pytest.approx(1.0)
    assert mg.n_images == 7
    base = evaluate_on_test(detector, test, 0.0, 0.25)
    assert base.pooled_dice == pytest.approx(0.0)  # flags all tissue, none of the lesion
    assert base.dice_mean == pytest.approx(0.0)


def test_residuals_show_why_matchgen_helps(detector):
    test = slices(n=8, seed=2)
    base, mg = {}, {}
    evaluate_on_test(detector, test, 0.0, 0.25, residuals=base)
    evaluate_on_test(detector, test, 0.6, 0.25, residuals=mg)
    # base: s = the lesion intensity -> 0 on the lesion, 0.5 on tissue; +MG: s = the tissue -> the reverse
    assert base["lesion_residual"] == pytest.approx(0.0, abs=1e-6) and base["tissue_residual"] == pytest.approx(0.5)
    assert base["contrast"] == pytest.approx(0.0, abs=1e-5)
    assert mg["lesion_residual"] == pytest.approx(0.5, abs=3e-3) and mg["tissue_residual"] < 3e-3
    assert mg["contrast"] > 100


def test_calibrated_eps_range_is_the_distance_to_the_free_optimum(detector):
    # lesions of intensity 0.9: z_o = 0.9, the free optimum is the median 0.5, distance 0.4 on every slice
    val = slices(n=9, seed=3, lesion=0.9)
    rng = calibrate_eps_range(detector, val, quantile=0.9, n_grid=5, n_fine=2)
    assert rng.n_images == 8
    assert np.allclose(rng.distances, 0.4, atol=3e-3)
    assert rng.eps_max == pytest.approx(0.4)
    assert rng.grid == pytest.approx([0.0, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4])
    assert "quantile" in rng.rule


def test_intensity_baseline_finds_bright_lesions_and_misses_dark_ones():
    val, test = slices(seed=4), slices(n=8, seed=5)
    ch = choose_intensity_baseline(val, np.round(np.linspace(0, 1, 21), 3))
    assert 0.5 <= ch.tau < 1.0 and ch.dice == pytest.approx(1.0)
    sc = evaluate_intensity_baseline(test, ch.tau)
    assert sc.dice_mean == pytest.approx(1.0) and sc.pooled_dice == pytest.approx(1.0)
    dark = slices(n=8, seed=5, lesion=0.2)
    assert evaluate_intensity_baseline(dark, ch.tau).dice_mean == pytest.approx(0.0)
    # the map is zero outside the foreground
    im = np.zeros((1, 1, S, S), np.float32)
    im[0, 0, 4:12, 4:12] = 0.7
    m = intensity_maps(im)
    assert m[0, 0, 0] == 0 and m[0, 5, 5] == pytest.approx(0.7)


def test_subsets_are_evenly_spaced_and_abnormal_only_on_validation():
    masks = np.zeros((10, 4, 4), bool)
    masks[[1, 3, 5, 7, 9], 0, 0] = True
    assert subset_indices(masks, 3, 10, abnormal_only=True).tolist() == [1, 5, 9]
    assert subset_indices(masks, None, 10, abnormal_only=True).tolist() == [1, 3, 5, 7, 9]
    assert subset_indices(masks, 2, 10, abnormal_only=False).tolist() == [0, 9]


def test_subset_limits_the_work(detector):
    imgs, masks = slices(n=8, seed=6)
    ch = choose_on_validation(detector, (imgs, masks), [0.6], [0.1, 0.3], subset=3)
    assert ch.n_images == 3


def test_unannotated_or_normal_only_split_is_a_clear_error(detector):
    imgs, masks = slices()
    with pytest.raises(OptionError, match="masks"):
        choose_on_validation(detector, (imgs, None), [0.6])
    with pytest.raises(OptionError, match="abnormal"):
        evaluate_on_test(detector, (imgs, np.zeros_like(masks)), 0.6, 0.1)
    with pytest.raises(OptionError, match="match"):
        choose_on_validation(detector, (imgs, masks[:, :4]), [0.6])


def test_step_limit_is_passed_to_the_solver(detector):
    imgs, _ = slices()
    pm = compute_maps(detector, imgs, [0.6], max_steps=3)
    assert pm.steps[0.6].max() == 3
    assert torch.is_tensor(torch.as_tensor(pm.loss[0.6]))


def test_choose_postprocessing_finds_the_rule_that_removes_salt_and_rim():
    """Raw maps: the lesion at 1, isolated salt pixels at 1, and a bright closed 1-px rim on the foreground's edge
    (one component larger than any lesion). A minimum component size removes the salt, and only erosion removes
    the rim: the chosen variant must reach Dice 1."""
    from app.core.protocol import DEFAULT_TAUS, choose_postprocessing

    rng = np.random.default_rng(1)
    n, s = 4, 40
    raw = np.zeros((n, s, s), np.float32)
    fg = np.zeros((n, s, s), bool)
    fg[:, 4:36, 4:36] = True
    gts = np.zeros((n, s, s), bool)
    for i in range(n):
        gts[i, 12:20, 14 + i : 22 + i] = True  # 64 px lesions, well inside
        raw[i][gts[i]] = 1.0
        for r, c in rng.integers(8, 32, size=(3, 2)):
            if not gts[i, r - 1 : r + 2, c - 1 : c + 2].any():
                raw[i, r, c] = 1.0  # salt
    raw[:, 4, 4:36] = raw[:, 35, 4:36] = raw[:, 4:36, 4] = raw[:, 4:36, 35] = 1.0  # a closed rim: 124 px
    post, table = choose_postprocessing(raw, fg, list(gts), np.asarray(DEFAULT_TAUS))
    assert post.erode_px >= 2 and post.min_component_px >= 10
    assert table[f"{post.median_size}/{post.erode_px}/{post.min_component_px}"] == pytest.approx(1.0)
    assert table["0/0/0"] < 0.9


def test_choose_on_validation_extends_the_grid_until_the_curve_peaks_inside(detector):
    """Lesions at 0.6 ... 1.0 need eps up to 0.5 (the L1 optimum is the tissue, 0.5; z_o = max): a grid that stops
    at 0.12 has its best at the top. Extended (1.5x, 2x, 3x of the top, twice) it reaches 0.54, where every slice
    is separated (Dice 1), and the larger values tie, so the curve peaks inside the grid."""
    imgs, masks = slices(6, with_normal=False)
    for i, level in enumerate([0.6, 0.7, 0.8, 0.9, 1.0, 1.0]):
        imgs[i, 0][masks[i] == 1] = level
    short = choose_on_validation(detector, (imgs, masks), [0.06, 0.12])
    assert short.eps == 0.12 and not short.peak_inside_grid and short.dice < 0.5 and short.grid_extended == 0
    ch = choose_on_validation(detector, (imgs, masks), [0.06, 0.12], extend=2)
    assert ch.grid_extended == 2 and ch.eps_grid[-3:] == [0.54, 0.72, 1.08]
    assert ch.eps == 0.54 and ch.dice == pytest.approx(1.0) and ch.peak_inside_grid
    assert ch.binding_fraction[0.06] == pytest.approx(1.0)  # far from the optimum the ball binds on every slice
    assert ch.binding_fraction[1.08] == pytest.approx(0.0)  # beyond every slice's need it never does


def test_volume_choice_and_scores_count_false_positives_on_normal_slices(detector):
    """Two volumes of 4 slices (two abnormal, two normal). At eps 0.6 the map is exactly the lesion (+0.5) so the
    volume Dice is 1 and no normal slice has a false positive; the base model (z_o = max) flags nothing on
    abnormal slices but nothing either on normal ones -> Dice 0; eps 0.1 cannot separate (it needs > 0.25)."""
    from app.core.protocol import choose_on_volumes, evaluate_volumes

    imgs, masks = slices(8, with_normal=False)
    imgs = imgs.reshape(2, 4, 1, S, S).copy()
    masks = masks.reshape(2, 4, S, S).copy()
    imgs[:, 2:] = 0.5
    masks[:, 2:] = 0
    vc = choose_on_volumes(detector, (imgs, masks), [0.1, 0.6])
    assert vc.eps == 0.6 and vc.dice == pytest.approx(1.0) and vc.base_dice == pytest.approx(0.0)
    # at the chosen eps the optimum (distance 0.5) lies inside the ball: the constraint does not bind, and the
    # solver stops on its own well inside its budget -- the facts the card records for the eps detect applies
    assert vc.binding_fraction == 0.0 and vc.step_cap_fraction == 0.0 and 0 < vc.mean_steps < 600
    starved = choose_on_volumes(detector, (imgs, masks), [0.1, 0.6], max_steps=2)
    assert starved.step_cap_fraction == 1.0 and starved.mean_steps == 2.0  # every solved slice used the budget
    scores = evaluate_volumes(detector, (imgs, masks), 0.6, vc.tau)
    assert scores["volume_dice"] == [1.0, 1.0] and scores["fp_pixels_per_normal_slice"] == 0.0
    low = evaluate_volumes(detector, (imgs, masks), 0.6, -1.0)  # everything flagged
    assert low["fp_pixels_per_normal_slice"] == pytest.approx(S * S)


def _z_volumes(z_list, slice_mm=2.0, seed=0):
    """Two volumes: a lesion (+0.3) through five consecutive slices, and on other slices single-slice specks of the
    same contrast that are not lesions (a 2-D model's residual that does not continue across slices)."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    n = len(z_list)
    imgs = np.full((2, n, 1, S, S), 0.5, np.float32)
    masks = np.zeros((2, n, S, S), bool)
    for r in range(2):
        masks[r, 1:6, 5:10, 5:10] = True
        imgs[r, 1:6, 0, 5:10, 5:10] = 0.8
        for k in range(n):
            y, x = rng.integers(0, S - 3, size=2)
            if not masks[r, k, y : y + 3, x : x + 3].any():
                imgs[r, k, 0, y : y + 3, x : x + 3] = 0.8
    return SimpleNamespace(images=imgs, masks=masks, z=list(z_list), slice_mm=slice_mm)


def test_z_window_is_chosen_when_lesions_continue_across_slices_and_noise_does_not(detector):
    """At eps 0.6 D is |x - 0.5|: lesion and specks both 0.3 on a slice, so no tau separates them slice by slice;
    averaged over 3 slices (6 mm at 2 mm) the lesion's inner slices keep 0.3 while a speck falls to 0.1."""
    from app.core.protocol import choose_z_on_volumes

    vols = _z_volumes(range(8))
    zc = choose_z_on_volumes(detector, vols, 0.6, z_grid_mm=(0.0, 6.0))
    plain, windowed = zc.table["0"][0], zc.table["6"][0]
    assert windowed > plain + 0.1 and zc.z_mm == 6.0 and zc.slices == 3 and zc.dice == pytest.approx(windowed)
    assert 0.1 <= zc.tau < 0.3  # between a speck's mean and the lesion's
    # ties go to the smaller window: a grid of 0 alone, or of windows too short to average, keeps D per slice
    assert choose_z_on_volumes(detector, vols, 0.6, z_grid_mm=(0.0, 2.0)).z_mm == 0.0


def test_z_window_averages_each_run_of_consecutive_slices_apart():
    """A test split's volumes hold two blocks of slices (27-43 and 75-92): the mean never mixes them; volumes that
    do not record their spacing are a clear error once a window is asked for."""
    from types import SimpleNamespace

    from app.core.detector import PostProcessing
    from app.core.protocol import across_volumes

    z = [0, 1, 2, 3, 10, 11, 12, 13]
    maps = np.zeros((1, 8, 2, 2), np.float32)
    maps[0, 4:] = 1.0
    fg = np.ones(maps.shape, bool)
    out = across_volumes(PostProcessing(z_mm=6.0), maps, fg, SimpleNamespace(z=z, slice_mm=2.0))
    np.testing.assert_array_equal(out, maps)  # each block is constant: unchanged, none of one leaks into the other
    out = across_volumes(PostProcessing(z_mm=6.0), maps, fg, SimpleNamespace(z=list(range(8)), slice_mm=2.0))
    assert out[0, 3, 0, 0] == pytest.approx(1 / 3) and out[0, 4, 0, 0] == pytest.approx(2 / 3)  # one run: mixed
    with pytest.raises(OptionError, match="slice spacing"):
        across_volumes(PostProcessing(z_mm=6.0), maps, fg, SimpleNamespace(z=z, slice_mm=None))
    assert across_volumes(PostProcessing(), maps, fg, None) is maps  # no window: nothing asked of the volumes


def test_volume_choice_runs_the_z_stage_on_its_own_maps(detector):
    """``choose_on_volumes(z_grid_mm=...)`` chooses the z window from the maps it solved, the same choice
    ``choose_z_on_volumes`` makes at that eps by solving again; without a grid there is no z stage."""
    from app.core.protocol import choose_on_volumes, choose_z_on_volumes

    vols = _z_volumes(range(8))
    vc = choose_on_volumes(detector, vols, [0.6], z_grid_mm=(0.0, 6.0))
    assert vc.eps == 0.6 and vc.z is not None
    assert vc.z == choose_z_on_volumes(detector, vols, 0.6, z_grid_mm=(0.0, 6.0))
    assert vc.z.table["0"][0] == pytest.approx(vc.dice, abs=1e-6)  # window 0 is the choice without a window
    assert vc.as_dict()["z"]["z_mm"] == 6.0
    assert choose_on_volumes(detector, vols, [0.6]).z is None
