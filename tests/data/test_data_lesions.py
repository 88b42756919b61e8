import numpy as np
import pytest
from scipy import ndimage

from app.data.lesions import KINDS, insert_lesions
from app.data.phantom import brain_phantom


@pytest.fixture
def head():
    return brain_phantom((48, 56, 40), seed=3)


def test_seeded_and_mask_matches_change(head):
    vol, brain = head
    sp = (1.5, 1.5, 2.0)
    a = insert_lesions(vol, brain, sp, np.random.default_rng(7), n_lesions=4, mass_effect_prob=0.0)
    b = insert_lesions(vol, brain, sp, np.random.default_rng(7), n_lesions=4, mass_effect_prob=0.0)
    np.testing.assert_array_equal(a[0], b[0])
    new, mask, recs = a
    assert len(recs) == 4 and mask.any()
    assert not (mask & ~brain).any(), "lesions stay inside the brain"
    diff = np.abs(new - vol)
    # what changed is where the mask is: nothing changes beyond a soft edge around it ...
    near = ndimage.binary_dilation(mask, iterations=3)
    assert diff[~near].max() == 0.0
    # ... and inside it the image changed clearly (>= 8 % of the intensity range on average, per lesion)
    rng_range = np.subtract(*np.percentile(vol[brain], [99, 1]))
    for r in recs:
        assert r.mean_change >= 0.08 * rng_range
    # the change is concentrated in the mask, not in its soft rim
    assert diff[mask].mean() > 2 * diff[near & ~mask].mean()


def test_bright_and_dark_relative_to_local_tissue(head):
    vol, brain = head
    for kind, sign in (("bright", 1), ("dark", -1)):
        new, mask, recs = insert_lesions(
            vol, brain, (1, 1, 1), np.random.default_rng(1), n_lesions=1, kinds={kind: 1.0}, mass_effect_prob=0
        )
        assert recs[0].kind == kind
        assert sign * (new[mask].mean() - vol[mask].mean()) > 0.1 * vol[brain].mean()
        # texture kept: the high-pass part inside the lesion is still the original noise
        hp_new = new - ndimage.gaussian_filter(new, 1)
        hp_old = vol - ndimage.gaussian_filter(vol, 1)
        core = ndimage.binary_erosion(mask, iterations=2)
        if core.sum() > 20:
            assert np.corrcoef(hp_new[core], hp_old[core])[0, 1] > 0.5


def test_sizes_kinds_mass_effect_and_region(head):
    vol, brain = head
    region = np.zeros_like(brain)
    region[:, :, 15:25] = True
    new, mask, recs = insert_lesions(
        vol, brain, (2, 2, 2), np.random.default_rng(5), n_lesions=8, mass_effect_prob=1.0, centre_region=region
    )
    assert {r.kind for r in recs} <= set(KINDS)
    assert all(1.5 <= r.radius_mm <= 15 for r in recs)
    assert all(15 <= r.centre[2] < 25 for r in recs)
    assert any(r.mass_effect_mm > 0 for r in recs)


def test_works_in_2d():
    vol, brain = brain_phantom((64, 64, 1), seed=2)
    new, mask, recs = insert_lesions(vol[:, :, 0], brain[:, :, 0], (1, 1), np.random.default_rng(0), n_lesions=2)
    assert new.shape == (64, 64) and mask.any() and len(recs) >= 1
