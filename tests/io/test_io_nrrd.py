"""NRRD input (.nrrd, .nhdr) read to the same world grid as a NIfTI twin, oblique directions included, and masks
written back as NRRD on the file's own grid (headers written here by pynrrd directly, not by the app)."""

import nibabel as nib
import nrrd
import numpy as np
import pytest

from app.errors import StudyError
from app.io import load_mask, load_study, save_mask, save_on_study_grid


def _oblique_affine_ras():
    """A voxel -> RAS affine with anisotropic voxels, a rotation about two axes and an axis flip."""
    a, b = np.deg2rad(17.0), np.deg2rad(-9.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    m = rz @ rx @ np.diag([0.9, -1.3, 2.5])  # the second voxel axis runs posterior
    aff = np.eye(4)
    aff[:3, :3] = m
    aff[:3, 3] = [-40.5, 60.25, -12.0]
    return aff


def _volume(shape=(12, 10, 7)):
    rng = np.random.default_rng(3)
    v = rng.normal(100, 20, size=shape).astype(np.float32)
    v[2, 3, 4] = 400.0  # a landmark
    return v


def _write_twins(tmp_path, vol, aff_ras, space="left-posterior-superior"):
    nib.save(nib.Nifti1Image(vol, aff_ras), str(tmp_path / "twin.nii.gz"))
    signs = {"left-posterior-superior": [-1, -1, 1], "right-anterior-superior": [1, 1, 1]}[space]
    world = np.diag([*signs, 1.0]) @ aff_ras
    header = {
        "space": space,
        "space directions": world[:3, :3].T,
        "space origin": world[:3, 3],
        "kinds": ["domain"] * 3,
    }
    nrrd.write(str(tmp_path / "twin.nrrd"), vol, header, index_order="F")
    return header


@pytest.mark.parametrize("space", ["left-posterior-superior", "right-anterior-superior"])
def test_oblique_nrrd_reads_to_the_nifti_twin_grid(tmp_path, space):
    vol, aff = _volume(), _oblique_affine_ras()
    _write_twins(tmp_path, vol, aff, space)
    a, b = load_study(tmp_path / "twin.nrrd"), load_study(tmp_path / "twin.nii.gz")
    np.testing.assert_allclose(a.original_affine, b.original_affine, atol=1e-5)
    np.testing.assert_allclose(a.original_affine, aff, atol=1e-5)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.original_shape == b.original_shape == vol.shape
    # the landmark sits at the same world point in both
    ka = np.argwhere(a.data == 400.0)[0]
    kb = np.argwhere(b.data == 400.0)[0]
    np.testing.assert_allclose(a.affine @ [*ka, 1], b.affine @ [*kb, 1], atol=1e-5)
    # and at the world point the LPS header names for voxel (2, 3, 4)
    world_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff @ [2, 3, 4, 1]
    np.testing.assert_allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ a.affine @ [*ka, 1], world_lps, atol=1e-5)
    assert a.meta["format"] == "NRRD"


def test_detached_nhdr_header_reads_like_the_nrrd(tmp_path):
    vol, aff = _volume(), _oblique_affine_ras()
    header = _write_twins(tmp_path, vol, aff)
    nrrd.write(str(tmp_path / "det.nhdr"), vol, dict(header), detached_header=True, index_order="F")
    assert (tmp_path / "det.nhdr").read_bytes()[:4] == b"NRRD"
    a, b = load_study(tmp_path / "det.nhdr"), load_study(tmp_path / "twin.nrrd")
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-9)


def test_masks_written_back_on_the_same_nrrd_grid(tmp_path):
    vol, aff = _volume(), _oblique_affine_ras()
    header = _write_twins(tmp_path, vol, aff)
    s = load_study(tmp_path / "twin.nrrd")
    mask = s.data > 200  # the landmark
    out = save_mask(s, mask, tmp_path / "mask.nrrd")
    data, h = nrrd.read(str(out), index_order="F")
    assert data.shape == vol.shape and data.dtype == np.uint8
    np.testing.assert_array_equal(data, (vol > 200).astype(np.uint8))  # the file's own voxel order
    assert h["space"] == "left-posterior-superior"
    np.testing.assert_allclose(h["space directions"], header["space directions"], atol=1e-12)
    np.testing.assert_allclose(h["space origin"], header["space origin"], atol=1e-12)
    # a map too, and both read back as masks/studies on the study's grid
    save_on_study_grid(s, s.data / 400.0, tmp_path / "map.nrrd")
    np.testing.assert_allclose(load_study(tmp_path / "map.nrrd").data, s.data / 400.0, rtol=1e-6)
    np.testing.assert_array_equal(load_mask(out, s), mask)
    # the NIfTI twin's mask is the same set of world points
    t = load_study(tmp_path / "twin.nii.gz")
    np.testing.assert_array_equal(load_mask(out, t), t.data > 200)
    assert not list(tmp_path.glob(".mask.nrrd*"))  # no temporary left behind


def test_ras_source_keeps_its_space_and_spacings_only_header_warns(tmp_path):
    vol, aff = _volume(), _oblique_affine_ras()
    _write_twins(tmp_path, vol, aff, "right-anterior-superior")
    s = load_study(tmp_path / "twin.nrrd")
    _, h = nrrd.read(str(save_mask(s, s.data > 200, tmp_path / "m.nrrd")))
    assert h["space"] == "right-anterior-superior"
    nrrd.write(str(tmp_path / "plain.nrrd"), vol, {"spacings": [1.0, 2.0, 3.0]}, index_order="F")
    p = load_study(tmp_path / "plain.nrrd")
    assert p.spacing == pytest.approx((1.0, 2.0, 3.0))
    assert any("no orientation" in w for w in p.warnings)


def test_bad_nrrd_is_one_readable_error(tmp_path):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4\nencoding: raw\n\n1234")
    with pytest.raises(StudyError, match="bad.nrrd"):
        load_study(bad)
    vol = _volume()
    nrrd.write(str(tmp_path / "odd.nrrd"), vol, {"space": "3D-right-handed", "space directions": np.eye(3)})
    with pytest.raises(StudyError, match="not a patient space"):
        load_study(tmp_path / "odd.nrrd")
