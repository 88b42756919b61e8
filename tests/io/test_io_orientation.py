"""Orientation: any file orientation loads as RAS, and arrays go back onto the original voxels exactly."""

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt

from app.data.phantom import brain_phantom
from app.io import load_mask, load_study, save_mask


def _write(tmp_path, codes, spacing=(2.0, 2.0, 3.0), name="s.nii.gz"):
    """A phantom stored in orientation ``codes``; returns (path, RAS volume, RAS affine)."""
    vol, _ = brain_phantom((20, 24, 16), seed=1)
    vol[2, 3, 4] = 500.0  # a marker voxel
    ras_aff = np.diag([*spacing, 1.0])
    ras_aff[:3, 3] = (-10, 20, 5)
    t = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt(codes))
    data = ornt.apply_orientation(vol, t)
    aff = ras_aff @ ornt.inv_ornt_aff(t, vol.shape)
    assert nib.aff2axcodes(aff) == tuple(codes)
    p = tmp_path / name
    nib.save(nib.Nifti1Image(data, aff), p)
    return p, vol, ras_aff


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LSA", "PIR"])
def test_loads_as_ras_and_mask_round_trips(tmp_path, codes):
    p, vol, ras_aff = _write(tmp_path, codes)
    s = load_study(p)
    assert s.original_axcodes == tuple(codes)
    assert nib.aff2axcodes(s.affine) == ("R", "A", "S")
    # same voxels in the same world places as the RAS phantom
    np.testing.assert_array_equal(s.data, vol)
    np.testing.assert_allclose(s.affine, ras_aff, atol=1e-5)
    assert s.spacing == pytest.approx((2.0, 2.0, 3.0))
    # a mask drawn on the study comes back on the same voxels of the file
    mask = np.zeros(s.shape, bool)
    mask[2, 3, 4] = True
    mask[10:13, 5:9, 7] = True
    out = save_mask(s, mask, tmp_path / "m.nii.gz")
    m_img = nib.load(out)
    assert m_img.shape == nib.load(p).shape
    np.testing.assert_allclose(m_img.affine, nib.load(p).affine, atol=1e-5)
    m = np.asarray(m_img.dataobj)
    f = np.asarray(nib.load(p).dataobj)
    assert m.dtype == np.uint8
    assert f[m.astype(bool)].max() == 500.0 and int(m.sum()) == int(mask.sum())
    np.testing.assert_array_equal(load_mask(out, s), mask)


def test_to_original_inverts_from_original(tmp_path):
    p, _, _ = _write(tmp_path, "LSA")
    s = load_study(p)
    rng = np.random.default_rng(0)
    a = rng.random(s.original_shape)
    np.testing.assert_array_equal(s.to_original(s.from_original(a)), a)


def test_mask_on_other_grid_is_refused(tmp_path):
    from app.errors import StudyError

    p, _, _ = _write(tmp_path, "LSA")
    q, _, _ = _write(tmp_path, "RAS", name="other.nii.gz")
    s = load_study(p)
    with pytest.raises(StudyError, match="differs"):
        load_mask(q, s)


def test_save_is_atomic_and_leaves_nothing_on_failure(tmp_path):
    from app.errors import StudyError

    p, _, _ = _write(tmp_path, "RAS")
    s = load_study(p)
    with pytest.raises(StudyError):
        save_mask(s, np.zeros(s.shape, bool), tmp_path / "missing-dir" / "m.nii.gz")
    with pytest.raises(StudyError):
        save_mask(s, np.zeros((3, 3, 3), bool), tmp_path / "m.nii.gz")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.nii.gz"]
