import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from app.core.metrics import (
    average_precision,
    dice,
    dice_per_tau,
    evaluate,
    fp_per_normal_slice,
    grid_search,
    lesion_hits,
    mean_dice_per_tau,
    paired_by_bins,
    paired_difference,
)


def test_dice_golden_values():
    p = np.zeros((4, 4), bool)
    g = np.zeros((4, 4), bool)
    p[0, :3] = True  # 3 predicted
    g[0, 1:] = True  # 3 true, 2 overlap
    assert dice(p, g) == pytest.approx(2 * 2 / 6)
    assert dice(g, g) == 1.0
    assert dice(p, np.zeros_like(g)) == 0.0
    assert dice(np.zeros_like(p), np.zeros_like(g)) == 1.0  # documented empty rule
    with pytest.raises(ValueError):
        dice(p, g[:2])


def test_ap_golden_value():
    # scores 0.9(+) 0.8(-) 0.7(+) 0.1(-): precision at the positives 1 and 2/3 -> AP = 0.5*1 + 0.5*2/3
    s = np.array([0.9, 0.8, 0.7, 0.1])
    y = np.array([1, 0, 1, 0], bool)
    assert average_precision(s, y) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert np.isnan(average_precision(s, np.zeros(4, bool)))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 300),
    seed=st.integers(0, 10_000),
    levels=st.sampled_from([0, 3, 10]),
)
def test_ap_matches_sklearn_including_ties(n, seed, levels):
    r = np.random.default_rng(seed)
    y = r.random(n) < 0.3
    if not y.any():
        y[0] = True
    s = r.random(n)
    if levels:
        s = np.round(s * levels) / levels  # many ties
    assert average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_dice_per_tau_matches_loop(rng):
    s = rng.random((16, 16))
    g = rng.random((16, 16)) < 0.2
    taus = np.linspace(0, 1, 21)
    fast = dice_per_tau(s, g, taus)
    slow = [dice(s > t, g) for t in taus]
    np.testing.assert_allclose(fast, slow)


def test_evaluate_means_over_abnormal_images_and_pools(rng):
    g1 = np.zeros((8, 8), bool)
    g1[2:5, 2:5] = True
    g_empty = np.zeros((8, 8), bool)
    m1 = g1.astype(float) * 0.9  # perfect on image 1
    m2 = rng.random((8, 8)) * 0.4  # a normal image with noise below tau except nothing
    sc = evaluate([m1, m2], [g1, g_empty], tau=0.5)
    assert sc.n_images == 1  # the normal image does not enter the per-image means
    assert sc.dice_mean == 1.0 and sc.ap_mean == pytest.approx(1.0)
    assert sc.pooled_dice == 1.0  # m2 stays below 0.5 everywhere
    sc2 = evaluate([m1, m2 + 0.3], [g1, g_empty], tau=0.5)
    assert sc2.dice_mean == 1.0 and sc2.pooled_dice < 1.0  # false positives on the normal image count pooled


def test_grid_search_picks_best_validation_pair():
    g = np.zeros((10, 10), bool)
    g[3:6, 3:6] = True
    good = g * 0.8 + 0.1  # separable at tau in (0.1, 0.9)
    bad = np.full((10, 10), 0.5)
    choice = grid_search({0.0: [bad], 0.2: [good], 0.4: [good]}, [g], taus=[0.05, 0.5, 0.95])
    assert choice.eps == 0.2  # tie with 0.4 goes to the smaller eps
    assert choice.tau == 0.5
    assert choice.dice == 1.0
    assert choice.table.shape == (3, 3)
    np.testing.assert_allclose(mean_dice_per_tau([good], [g], [0.5]), [1.0])


def test_paired_difference_golden_values():
    p = paired_difference([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0])
    assert p["mean"] == 1.0 and p["ci95"] == [1.0, 1.0] and (p["wins"], p["losses"], p["ties"], p["n"]) == (4, 0, 0, 4)
    p = paired_difference([0.1, 0.2, 0.3], [0.2, 0.2, 0.1])
    assert p["mean"] == pytest.approx(-0.1 / 3) and (p["wins"], p["losses"], p["ties"]) == (1, 1, 1)
    lo, hi = p["ci95"]
    assert -0.2 - 1e-12 <= lo <= p["mean"] <= hi <= 0.1 + 1e-12  # within the range of the differences
    assert paired_difference([0.1, 0.2, 0.3], [0.2, 0.2, 0.1]) == p  # seeded: reproducible
    with pytest.raises(ValueError):
        paired_difference([0.1], [0.1, 0.2])


def test_paired_by_bins_splits_the_pairs_by_value():
    a = [0.5, 0.5, 0.2, 0.2, 0.9]
    b = [0.7, 0.6, 0.0, 0.1, 0.9]
    area = [100, 2999, 3000, 4500, 8000]  # bins [0, 3000), [3000, 7000), [7000, ...)
    rows = paired_by_bins(a, b, area, [0, 3000, 7000])
    assert [(r["lo"], r["hi"], r["n"]) for r in rows] == [(0, 3000, 2), (3000, 7000, 2), (7000, None, 1)]
    assert rows[0]["mean"] == pytest.approx(0.15)
    assert (rows[0]["a_mean"], rows[0]["b_mean"]) == pytest.approx((0.5, 0.65))
    assert rows[1]["mean"] == pytest.approx(-0.15) and rows[1]["losses"] == 2
    assert rows[2]["mean"] == 0.0 and rows[2]["ties"] == 1
    # each bin is paired_difference of its own pairs: the same interval, seed for seed
    assert rows[1]["ci95"] == paired_difference([0.2, 0.2], [0.0, 0.1])["ci95"]
    empty = paired_by_bins(a, b, area, [0, 50_000])[1]
    assert empty["n"] == 0 and np.isnan(empty["a_mean"]) and np.isnan(empty["mean"])
    with pytest.raises(ValueError):
        paired_by_bins(a, b, area[:4], [0, 3000])
    with pytest.raises(ValueError):
        paired_by_bins(a, b, area, [3000, 0])


def test_paired_difference_interval_covers_a_known_shift():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 400)
    p = paired_difference(a, a + 0.05 + rng.normal(0, 0.1, 400))
    assert p["ci95"][0] < 0.05 < p["ci95"][1] and p["ci95"][0] > 0  # the true shift inside, zero outside


def test_evaluate_keeps_per_image_scores_of_abnormal_images_in_order():
    gts = [np.zeros((4, 4), bool), np.eye(4, dtype=bool), np.ones((4, 4), bool)]
    maps = [np.zeros((4, 4)), np.eye(4), np.full((4, 4), 0.4)]
    s = evaluate(maps, gts, 0.5)
    assert s.dice_per_image == [1.0, 0.0] and s.ap_per_image == [1.0, 1.0] and s.n_images == 2


def test_lesion_hits_sizes_and_flagged_fractions_per_component():
    gt = np.zeros((2, 6, 6), bool)
    gt[0, 0:2, 0:2] = True  # 4 voxels
    gt[0:2, 4, 1:4] = True  # 6 voxels across both slices: one 3-D lesion
    pred = np.zeros_like(gt)
    pred[0, 0, 0] = True  # 1 of 4
    pred[:, 4, 1:4] = True  # all 6
    pred[1, 0, 5] = True  # a false positive: no lesion's business
    assert lesion_hits(pred, gt) == [(4, 0.25), (6, 1.0)]
    assert lesion_hits(pred, np.zeros_like(gt)) == []
    with pytest.raises(ValueError, match="shape"):
        lesion_hits(pred[0], gt)


def test_fp_per_normal_slice_counts_only_slices_without_lesion():
    gt = np.zeros((3, 4, 4), bool)
    gt[0, 1, 1] = True  # slice 0 holds a lesion; slices 1 and 2 are normal
    pred = np.zeros_like(gt)
    pred[0, 2:, 2:] = True  # 4 flagged on the lesion slice: not counted
    pred[1, 0, :3] = True  # 3 on a normal slice
    pred[2, 3, 3] = True  # 1 on the other
    assert fp_per_normal_slice(pred, gt) == 2.0
    assert fp_per_normal_slice(pred, np.ones_like(gt)) == 0.0  # no normal slice
    with pytest.raises(ValueError, match="shape"):
        fp_per_normal_slice(pred[0], gt)


def _dice_table_by_hand(maps, gts, taus, min_px, abnormal_only):
    """The definition, tau by tau: threshold, drop small in-plane components, Dice; mean over the items."""
    from app.core.maps import detection_mask

    rows = []
    for m, g in zip(maps, gts, strict=True):
        if abnormal_only and not g.any():
            continue
        rows.append([dice(detection_mask(m, t, min_px) if t >= m.min() else np.ones_like(g), g) for t in taus])
    return np.mean(rows, axis=0)


@pytest.mark.parametrize("abnormal_only", [True, False])
def test_dice_tables_label_every_tau_at_once_and_match_the_definition(rng, abnormal_only):
    from scipy import ndimage

    from app.core.metrics import dice_table, dice_tables

    taus = np.round(np.arange(0.0, 0.7, 0.01), 4)
    maps, gts = [], []
    for k in range(4):  # volumes (Z, S, S): smooth blobs of every size, one with values on the tau grid (ties)
        m = ndimage.gaussian_filter(rng.random((5, 40, 40)), (0, 1.3, 1.3))
        m = 0.6 * (m - m.min()) / (m.max() - m.min())
        m = (np.round(m, 2) if k == 1 else m).astype(np.float32)
        m[:, :4] = 0.0  # background
        g = np.zeros(m.shape, bool)
        if k != 2:  # one normal volume
            g[1:4, 10 + k : 22, 12:30] = True
        maps.append(m)
        gts.append(g)
    sizes = [0, 1, 3, 10, 30, 100]
    got = dice_tables(maps, gts, taus, sizes, abnormal_only)
    assert got.shape == (len(sizes), len(taus))
    for row, mc in zip(got, sizes, strict=True):
        want = _dice_table_by_hand(maps, gts, taus, mc, abnormal_only)
        np.testing.assert_allclose(row, want, atol=1e-12)
        np.testing.assert_allclose(dice_table(maps, gts, taus, mc, abnormal_only), want, atol=1e-12)
    assert not np.allclose(got[0], got[-1])  # the component rule changes the table here: the check has teeth
    # images (S, S) give what their stack of slices gives one by one
    images, image_gts = list(maps[0]), list(gts[0])
    np.testing.assert_allclose(
        dice_tables(images, image_gts, taus, [30], abnormal_only)[0],
        _dice_table_by_hand(images, image_gts, taus, 30, abnormal_only),
        atol=1e-12,
    )
