"""Pictures and the real NIfTI/MGZ files shipped inside nibabel."""

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from app.data.normalize import normalize_study
from app.data.slices import axial_image
from app.errors import StudyError
from app.io import load_mask, load_study, save_mask

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_grey_picture_shows_as_itself(tmp_path, suffix):
    img = np.random.default_rng(0).integers(0, 255, (30, 40), dtype=np.uint8)
    img[0, 0] = 255
    p = tmp_path / f"g{suffix}"
    Image.fromarray(img).save(p)
    s = load_study(p)
    assert s.modality == "OT" and s.channels == 1 and s.shape == (40, 30, 1)
    np.testing.assert_array_equal(axial_image(s.data, 0), img)
    np.testing.assert_allclose(axial_image(normalize_study(s), 0), img / 255.0, rtol=1e-6)
    # a mask saved for a picture lands on its pixel grid
    m = np.zeros(s.shape, bool)
    m[np.unravel_index(int(np.argmax(s.data)), s.shape)] = True
    out = save_mask(s, m, tmp_path / "m.nii.gz")
    saved = np.asarray(nib.load(out).dataobj)
    assert saved.shape == (30, 40, 1) and saved[0, 0, 0] == 1 and saved.sum() == 1
    np.testing.assert_array_equal(load_mask(out, s), m)


def test_rgb_jpeg_and_16_bit_tiff(tmp_path):
    rgb = np.zeros((20, 24, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[5:10, 5:10, 1] = 180
    p = tmp_path / "c.jpg"
    Image.fromarray(rgb).save(p, quality=95)
    s = load_study(p)
    assert s.channels == 3 and s.data.shape == (24, 20, 1, 3)
    assert abs(float(axial_image(s.data, 0)[..., 0].mean()) - 200) < 5
    t = (np.arange(12 * 10).reshape(12, 10) * 500).astype(np.uint16)
    p = tmp_path / "t.tif"
    Image.fromarray(t).save(p)
    s = load_study(p)
    np.testing.assert_array_equal(axial_image(s.data, 0), t)
    assert normalize_study(s).max() == pytest.approx(t.max() / 65535.0)


def test_broken_picture(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(StudyError, match="not a readable image"):
        load_study(p)


def test_nibabel_4d_uses_first_volume():
    s = load_study(NIB_DATA / "example4d.nii.gz")
    ref = np.asarray(nib.load(NIB_DATA / "example4d.nii.gz").dataobj)[..., 0]
    assert any("first volume" in w for w in s.warnings)
    np.testing.assert_array_equal(s.to_original(s.data), ref.astype(np.float32))


def test_nibabel_nifti2_and_mgz():
    for name in ("example_nifti2.nii.gz", "test.mgz", "anatomical.nii", "standard.nii.gz"):
        img = nib.load(NIB_DATA / name)
        s = load_study(NIB_DATA / name)
        ref = np.asarray(img.dataobj, dtype=np.float32)
        if ref.ndim == 4:
            ref = ref[..., 0]
        np.testing.assert_allclose(s.to_original(s.data), ref, rtol=1e-6)
        np.testing.assert_allclose(s.original_affine, img.affine)
        assert nib.aff2axcodes(s.affine) == ("R", "A", "S")


def test_partial_nan_is_filled_and_reported():
    s = load_study(NIB_DATA / "resampled_anat_moved.nii")
    assert np.isfinite(s.data).all() and any("NaN" in w for w in s.warnings)


def test_cifti_is_refused():
    with pytest.raises(StudyError):
        load_study(NIB_DATA / "row_major.dconn.nii")


def test_header_claiming_a_huge_volume_is_refused(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_data_dtype(np.float32)
    p = tmp_path / "huge.nii"
    p.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 1024)
    with pytest.raises(StudyError, match="voxels"):
        load_study(p)


def test_zero_sized_4d_header_is_refused(tmp_path):
    """Found by the fuzz test: a header with a zero dimension in a 4D NIfTI-2 file."""
    raw = gzip.decompress((NIB_DATA / "example_nifti2.nii.gz").read_bytes())
    b = bytearray(raw)
    b[32] = 0  # dim[2] low byte of NIfTI-2 (int64 dims start at offset 16)
    p = tmp_path / "zero.nii"
    p.write_bytes(bytes(b))
    with pytest.raises(StudyError):
        load_study(p)


def test_header_repairs_print_nothing(tmp_path, capfd):
    """nibabel logs repairs of a damaged header to stderr; the CLI's single error line must stay alone."""
    raw = bytearray(gzip.decompress((NIB_DATA / "standard.nii.gz").read_bytes()))
    raw[0] = 0x10  # sizeof_hdr != 348: nibabel repairs it and logs the repair
    raw[254] = 0x7F  # an invalid qform_code
    p = tmp_path / "repaired.nii"
    p.write_bytes(bytes(raw))
    try:
        load_study(p)
    except StudyError:
        pass
    out, err = capfd.readouterr()
    assert out == "" and err == ""
