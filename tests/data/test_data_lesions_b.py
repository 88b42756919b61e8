import numpy as np
import pytest
from scipy import ndimage

from app.data.lesions import KINDS, Lesion, insert_lesions
from app.data.lesions_b import (
    LesionB,
    estimate_noise,
    insert_lesions_b,
    midsagittal_plane,
    solidity,
    tissue_levels,
)
from app.data.phantom import brain_phantom

SP = (1.5, 1.5, 2.0)


@pytest.fixture(scope="module")
def head():
    return brain_phantom((48, 56, 40), seed=3)


def _floor(vol, brain):
    return 0.08 * np.subtract(*np.percentile(vol[brain], [99, 1]))


def test_seeded_inside_the_brain_with_kinds_and_labels(head):
    vol, brain = head
    lab = np.zeros(vol.shape, np.uint8)
    a = insert_lesions_b(vol, brain, SP, np.random.default_rng(7), n_lesions=6, labels_out=lab)
    b = insert_lesions_b(vol, brain, SP, np.random.default_rng(7), n_lesions=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    new, mask, recs = a
    assert len(recs) == 6 and all(isinstance(r, LesionB) and isinstance(r, Lesion) for r in recs)
    assert not (mask & ~brain).any(), "lesions stay inside the brain"
    np.testing.assert_array_equal(new[~brain], vol[~brain])
    # the labels are the mask, and every recorded kind labels some voxels
    np.testing.assert_array_equal(lab > 0, mask)
    assert {KINDS[k - 1] for k in np.unique(lab[lab > 0])} <= {r.kind for r in recs}
    c = insert_lesions_b(vol, brain, SP, np.random.default_rng(8), n_lesions=6)
    assert not np.array_equal(c[1], mask), "another seed, other lesions"
    d = recs[0].to_dict()
    assert d["style"] == "B" and d["kind"] in KINDS and 2.0 <= d["radius_mm"] <= 20.0


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_its_mask_and_nothing_far_away(head, kind):
    vol, brain = head
    new, mask, recs = insert_lesions_b(
        vol, brain, SP, np.random.default_rng(11), n_lesions=2, kinds={kind: 1.0}, mass_effect_prob=0.0
    )
    assert [r.kind for r in recs] == [kind, kind]
    diff = np.abs(new - vol)
    for r in recs:  # each lesion's mean |change| over its mask clears the floor
        assert r.mean_change >= _floor(vol, brain)
    assert diff[mask].mean() >= _floor(vol, brain)
    # without mass effect nothing changes beyond the soft edge (<= 2 mm) around the mask
    near = ndimage.binary_dilation(mask, iterations=3)
    assert diff[~near].max() == 0.0


def test_mass_effect_moves_tissue_near_the_lesion_only(head):
    vol, brain = head
    new, mask, recs = insert_lesions_b(
        vol,
        brain,
        SP,
        np.random.default_rng(5),
        n_lesions=2,
        kinds={"bright": 1.0},
        mass_effect_prob=1.0,
        diameter_mm=(14.0, 20.0),
    )
    assert all(r.mass_effect_mm > 0 for r in recs)
    diff = np.abs(new - vol)
    dist = ndimage.distance_transform_edt(~mask, sampling=SP)
    assert diff[(dist > 0) & (dist < 4)].max() > 0, "tissue around the lesion was pushed"
    assert diff[dist > 25].max() == 0.0, "nothing changes far outside"


def test_intensities_follow_the_subjects_tissue_levels(head):
    vol, brain = head
    lv = tissue_levels(vol, brain)
    assert lv.csf < lv.gm < lv.wm
    assert abs(lv.csf - 30) < 6, "the phantom's ventricle is the low class"
    means = {}
    for kind in ("bright", "dark", "cavity"):
        new, mask, recs = insert_lesions_b(
            vol, brain, SP, np.random.default_rng(3), n_lesions=1, kinds={kind: 1.0}, diameter_mm=(16, 24)
        )
        means[kind] = float(new[mask].mean())
        if recs[0].rim == "ring":  # ring enhancement: a rim above white matter around a darker core
            rim = mask & ~ndimage.binary_erosion(mask)
            assert new[rim].mean() > lv.wm and new[ndimage.binary_erosion(mask, iterations=2)].mean() < lv.gm
            means[kind] = float(new[rim].mean())
        if not recs[0].rim:  # a plain lesion's values scatter around its level by its noise
            assert abs(float(np.median(new[mask])) - recs[0].level) < 0.3 * lv.delta + 2 * recs[0].noise_sigma
    assert means["bright"] > lv.wm
    assert means["dark"] < lv.gm
    assert means["cavity"] < lv.gm


def _smooth_anatomy(shape, rng):
    """Two piecewise-constant 'tissues' with smooth boundaries and a brain mask."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), 4.0)
    vol = np.where(f > 0, 100.0, 70.0).astype(np.float32)
    vol = ndimage.gaussian_filter(vol, 0.8)
    brain = np.ones(shape, dtype=bool)
    brain[:3] = brain[-3:] = False
    brain[:, :3] = brain[:, -3:] = False
    brain[:, :, :3] = brain[:, :, -3:] = False
    return vol, brain


@pytest.mark.parametrize("true_smooth", [0.0, 1.0])
def test_noise_estimate_known_answer(true_smooth):
    """White (or 1-voxel-smoothed) Gaussian noise of std 3 on a smooth anatomy: the model finds its texture and
    level, and noise it samples has the same high-pass statistics as the real noise."""
    rng = np.random.default_rng(0)
    vol, brain = _smooth_anatomy((56, 56, 56), rng)
    n = rng.standard_normal(vol.shape).astype(np.float32)
    if true_smooth:
        n = ndimage.gaussian_filter(n, true_smooth)
    n = 3.0 * n / n.std()
    nm, resid = estimate_noise(vol + n, brain, (1.0, 1.0, 1.0))
    # (a smoothing below ~0.4 voxel barely changes white noise, so only that much is asked of the white case)
    assert max(abs(s - true_smooth) for s in nm.smooth_vox) < (0.25 if true_smooth else 0.45)
    assert nm.sigma / nm.gain == pytest.approx(3.0, rel=0.15), "the noise's own std recovered"
    fake = nm.sample(vol.shape, np.random.default_rng(1))
    hp = fake - ndimage.gaussian_filter(fake, 1.0)
    hp_real = n - ndimage.gaussian_filter(n, 1.0)
    assert hp.std() == pytest.approx(hp_real.std(), rel=0.15)
    for ax in range(3):  # same texture: the lag-1 autocorrelation of the high-pass residual
        a, b = np.moveaxis(hp, ax, 0), np.moveaxis(hp_real, ax, 0)
        ra = float((a[1:] * a[:-1]).mean() / (a * a).mean())
        rb = float((b[1:] * b[:-1]).mean() / (b * b).mean())
        assert abs(ra - rb) < 0.06


def test_replaced_values_carry_the_local_noise(head):
    vol, brain = head
    nm, resid = estimate_noise(vol, brain, SP)
    new, mask, recs = insert_lesions_b(
        vol, brain, SP, np.random.default_rng(2), n_lesions=1, kinds={"dark": 1.0}, diameter_mm=(24, 30)
    )
    core = ndimage.binary_erosion(mask, iterations=2)
    assert core.sum() > 50
    hp = new - ndimage.gaussian_filter(new, 1.0)
    inside = float(1.4826 * np.median(np.abs(hp[core] - np.median(hp[core]))))
    assert 0.6 * recs[0].noise_sigma < inside < 1.5 * recs[0].noise_sigma
    assert 0.5 * nm.sigma <= recs[0].noise_sigma <= 2.0 * nm.sigma


def test_midsagittal_plane_known_answer():
    vol, brain = brain_phantom((41, 40, 30), seed=0)
    assert midsagittal_plane(brain) == 20.0
    shifted = np.zeros((48, 40, 30), dtype=bool)
    shifted[5:46] = brain
    assert midsagittal_plane(shifted) == 25.0
    even = np.zeros((48, 40, 30), dtype=bool)
    even[4:45] = brain
    assert midsagittal_plane(even) == 24.0


def test_mirror_copies_the_contralateral_hemisphere(head):
    vol, brain = head
    # make the hemispheres differ clearly (left half brighter in a band), so mirror copies are visible
    asym = vol.copy()
    asym[:20][brain[:20]] += 15.0
    mid = midsagittal_plane(brain)
    new, mask, recs = insert_lesions_b(
        asym, brain, SP, np.random.default_rng(4), n_lesions=3, kinds={"mirror": 1.0}, diameter_mm=(10, 18)
    )
    assert len(recs) == 3
    x = np.arange(vol.shape[0])
    src = asym[np.clip(np.rint(2 * mid).astype(int) - x, 0, vol.shape[0] - 1)]  # the left-right mirror image
    lab, n = ndimage.label(mask)
    for r in recs:
        assert r.source_centre == (int(round(2 * mid)) - r.centre[0], *r.centre[1:])
        assert (r.centre[0] - mid) * (r.source_centre[0] - mid) < 0, "the source is in the other hemisphere"
        piece = (lab == lab[r.centre]) if mask[r.centre] else mask
        xs = np.argwhere(piece)[:, 0]
        assert np.all(np.sign(xs - mid) == np.sign(r.centre[0] - mid)), "the lesion stays on its own side"
    # inside the masks the new image is the mirror image (blended only at the soft edge)
    core = ndimage.binary_erosion(mask, iterations=1)
    err = np.abs(new - src)[core]
    assert err.mean() < 0.15 * np.abs(new - asym)[core].mean()
    assert np.corrcoef(new[mask], src[mask])[0, 1] > 0.95


def _pieces(m):
    lab, n = ndimage.label(m, np.ones((3, 3, 3)))
    sizes = ndimage.sum_labels(m, lab, np.arange(1, n + 1))
    return lab == 1 + int(np.argmax(sizes)), n


def test_shapes_are_more_lobulated_than_style_a(head):
    """Style B's thresholded random fields are measurably less convex than style A's noisy ellipsoids (solidity
    of the main piece: style A's blobs may also shed small satellites), and always one piece."""
    vol, brain = head
    sol_a, sol_b = [], []
    for seed in range(10):
        _, ma, ra = insert_lesions(
            vol, brain, SP, np.random.default_rng(seed), n_lesions=1, radius_mm=(6.0, 10.0), kinds={"dark": 1.0}
        )
        _, mb, rb = insert_lesions_b(
            vol, brain, SP, np.random.default_rng(seed), n_lesions=1, diameter_mm=(16.0, 24.0), kinds={"dark": 1.0}
        )
        sol_a.append(solidity(_pieces(ma)[0], SP))
        main_b, n_b = _pieces(mb)
        assert n_b == 1
        sol_b.append(solidity(main_b, SP))
        assert rb[0].solidity == pytest.approx(sol_b[-1])
    assert np.median(sol_b) < np.median(sol_a) - 0.1, (np.median(sol_a), np.median(sol_b))


def test_solidity_known_answers():
    cube = np.zeros((12, 12, 12), dtype=bool)
    cube[2:10, 2:10, 2:10] = True
    assert solidity(cube, (1, 1, 1)) == pytest.approx(1.0)
    ell = cube.copy()
    ell[2:10, 2:6, 2:6] = False  # an L-shaped prism: 3/4 of its hull... minus the hull's diagonal cut
    assert 0.75 < solidity(ell, (1, 1, 1)) < 0.9


def test_style_a_labels_match_its_mask(head):
    vol, brain = head
    lab = np.zeros(vol.shape, np.uint8)
    a = insert_lesions(vol, brain, SP, np.random.default_rng(7), n_lesions=4, labels_out=lab)
    b = insert_lesions(vol, brain, SP, np.random.default_rng(7), n_lesions=4)
    np.testing.assert_array_equal(a[0], b[0])  # asking for labels changes nothing else
    np.testing.assert_array_equal(lab > 0, a[1])
    assert {KINDS[k - 1] for k in np.unique(lab[lab > 0])} <= {r.kind for r in a[2]}
    ids = np.zeros(vol.shape, np.uint16)
    c = insert_lesions(vol, brain, SP, np.random.default_rng(7), n_lesions=4, ids_out=ids)
    np.testing.assert_array_equal(a[0], c[0])  # nor does asking for the lesions' numbers
    np.testing.assert_array_equal(ids > 0, a[1])
    assert set(np.unique(ids[ids > 0])) <= set(range(1, len(a[2]) + 1)) and ids.max() == len(a[2])
    # each number's voxels carry its record's kind (the two maps are painted in the same order)
    assert all((lab[ids == n] == KINDS.index(r.kind) + 1).all() for n, r in enumerate(a[2], start=1))


def test_works_in_2d():
    vol, brain = brain_phantom((64, 64, 1), seed=2)
    new, mask, recs = insert_lesions_b(vol[:, :, 0], brain[:, :, 0], (1, 1), np.random.default_rng(0), n_lesions=3)
    assert new.shape == (64, 64) and mask.any() and len(recs) >= 1
    assert not (mask & ~brain[:, :, 0]).any()
