"""The intensity refinement of the atlas brain mask (app.data.brain.refine_brain_mask) on a synthetic head with
known answers: a bright ellipsoid brain inside a dark CSF shell, a dark skull and bright scalp fat, with an atlas
mask that was deliberately mis-registered (shifted and enlarged so that it reaches through the skull into the
scalp on one side and misses brain on the other)."""

import numpy as np

from app.data.brain import REFINE_GROW_MM, REFINE_SHRINK_MM, _signed_distance, refine_brain_mask, set_threads

set_threads(1)

SPACING = (2.0, 2.0, 2.5)  # anisotropic, as scanner studies are
SHAPE = (80, 90, 64)


def _ellipsoid(centre_mm, radii_mm):
    g = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, SPACING, strict=True)], indexing="ij")
    return sum(((x - c) / r) ** 2 for x, c, r in zip(g, centre_mm, radii_mm, strict=True)) <= 1.0


def _head(seed=0):
    centre = [n * s / 2 for n, s in zip(SHAPE, SPACING, strict=True)]
    brain_r = np.array([55.0, 65.0, 50.0])
    brain = _ellipsoid(centre, brain_r)
    csf = _ellipsoid(centre, brain_r + 3.0)  # 3 mm of CSF
    skull = _ellipsoid(centre, brain_r + 8.0)  # 5 mm of bone
    scalp = _ellipsoid(centre, brain_r + 14.0)  # 6 mm of scalp fat
    rng = np.random.default_rng(seed)
    vol = np.zeros(SHAPE, np.float32)
    vol[scalp] = 160.0  # fat: brighter than white matter
    vol[skull] = 12.0
    vol[csf] = 30.0
    vol[brain] = 95.0  # grey matter
    vol[_ellipsoid(centre, brain_r - 12.0)] = 120.0  # white matter
    vol += rng.normal(0.0, 5.0, SHAPE).astype(np.float32)
    # the atlas: 7 mm off to the right and 8 % too big -- through CSF and skull into the scalp on the right
    atlas = _ellipsoid([centre[0] + 7.0, centre[1], centre[2] + 2.0], brain_r * 1.08)
    return vol, brain, atlas, scalp & ~skull


def _dice(a, b):
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def test_refined_mask_hugs_the_brain_and_keeps_no_scalp():
    vol, brain, atlas, scalp = _head()
    assert (atlas & scalp).sum() > 2000  # the mis-registered atlas does take in scalp
    assert _dice(atlas, brain) < 0.9
    refined, facts = refine_brain_mask(vol, atlas, SPACING)
    assert facts["status"] == "refined"
    assert 30.0 < facts["threshold"] < 95.0  # between the dark band and grey matter
    assert _dice(refined, brain) > 0.97, _dice(refined, brain)
    assert (refined & scalp).sum() == 0
    # the skull and CSF band it overlapped are gone too (a voxel of partial volume at most)
    assert (refined & ~brain).sum() < 0.02 * brain.sum()
    assert facts["removed_ml"] > 50 and facts["added_ml"] > 10


def test_a_dark_lesion_at_the_brain_surface_stays_in_the_brain():
    """A CSF-dark lesion (cavity, cyst) that opens onto the brain's surface is as dark as the band the refinement
    removes; the dent it would leave is filled back (REFINE_FILL_MM): all of it deeper than 3 mm below the brain's
    surface stays in the mask (without the fill part of that is cut away). Its outermost ~3 mm, where it opens
    onto the CSF, cannot be told from CSF and is lost."""
    import app.data.brain as brain_mod

    vol, brain, atlas, scalp = _head(seed=4)
    centre = [n * s / 2 for n, s in zip(SHAPE, SPACING, strict=True)]
    lesion = _ellipsoid([centre[0], centre[1], centre[2] + 44.0], [9.0, 9.0, 9.0]) & brain  # top of the brain
    vol[lesion] = 30.0 + np.random.default_rng(5).normal(0.0, 5.0, int(lesion.sum()))
    deep = lesion & (_signed_distance(brain, SPACING) < -3.0)
    assert deep.sum() > 100
    refined, _ = refine_brain_mask(vol, atlas, SPACING)
    assert refined[deep].all()
    assert (refined & scalp).sum() == 0 and _dice(refined, brain) > 0.97
    old = brain_mod.REFINE_FILL_MM
    try:
        brain_mod.REFINE_FILL_MM = 0.0
        unfilled, _ = refine_brain_mask(vol, atlas, SPACING)
    finally:
        brain_mod.REFINE_FILL_MM = old
    assert not unfilled[deep].all()


def test_refinement_is_bounded_by_the_atlas_mask():
    """Whatever the intensities, the result stays between the atlas mask eroded by REFINE_SHRINK_MM and dilated by
    REFINE_GROW_MM: a refinement that goes wrong cannot be worse than that."""
    vol, brain, atlas, _ = _head(seed=1)
    d = _signed_distance(atlas, SPACING)
    for v in (vol, np.zeros_like(vol), np.full_like(vol, 200.0), np.random.default_rng(2).random(SHAPE) * 200):
        refined, _ = refine_brain_mask(v, atlas, SPACING)
        assert refined[d < -REFINE_SHRINK_MM].all()
        assert not refined[d > REFINE_GROW_MM].any()
    # a uniform image leaves nothing to classify: the atlas mask as it is, and said so
    flat, facts = refine_brain_mask(np.zeros_like(vol), atlas, SPACING)
    assert facts["status"].startswith("skipped") and np.array_equal(flat, atlas)


def test_refined_mask_at_the_edge_of_the_field_of_view():
    """A brain cut by the field of view (top slices missing) keeps its cut face: the morphology does not eat the
    mask away at the volume's edge."""
    vol, brain, atlas, _ = _head(seed=3)
    cut = 50
    refined, _ = refine_brain_mask(vol[:, :, :cut], atlas[:, :, :cut], SPACING)
    b = brain[:, :, :cut]
    assert _dice(refined, b) > 0.97
    top = b[:, :, cut - 1]
    assert (refined[:, :, cut - 1] & top).sum() > 0.95 * top.sum()
