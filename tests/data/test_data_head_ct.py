"""InVesalius project reading and the project's DICOM series writer (round trip through load_study)."""

import io
import plistlib
import tarfile

import numpy as np
import pytest

from app.data.head_ct import read_inv3, write_dicom_series
from app.errors import StudyError
from app.io import load_study


def _inv3(path, vol_zyx, spacing=(0.9, 0.9, 1.5)):
    main = {
        "matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(vol_zyx.shape)},
        "spacing": list(spacing),
        "modality": "CT",
        "name": "tiny",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("main.plist", plistlib.dumps(main)), ("matrix.dat", vol_zyx.astype(np.int16).tobytes())):
            info = tarfile.TarInfo(f"tmpx/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_inv3_to_dicom_series_and_back(tmp_path):
    rng = np.random.default_rng(0)
    zyx = rng.integers(-1024, 2000, size=(5, 12, 10)).astype(np.int16)
    zyx[4, 11, 0] = 3000  # last slice (superior), last row (anterior), first column (patient's right)
    _inv3(tmp_path / "x.inv3", zyx)
    vol, affine, main = read_inv3(tmp_path / "x.inv3")
    assert vol.shape == (10, 12, 5) and main["name"] == "tiny"
    files = write_dicom_series(vol, affine, tmp_path / "dcm")
    assert len(files) == 5
    s = load_study(tmp_path / "dcm")
    assert s.modality == "CT" and s.spacing == pytest.approx((0.9, 0.9, 1.5))
    # in RAS the marker is most superior, most anterior, and right-most (the first column is the patient's right)
    i, j, k = np.unravel_index(int(np.argmax(s.data)), s.shape)
    assert (i, j, k) == (9, 11, 4) and s.data.max() == 3000
    np.testing.assert_array_equal(np.sort(s.data.ravel()), np.sort(zyx.ravel().astype(np.float32)))


def test_not_an_inv3(tmp_path):
    p = tmp_path / "bad.inv3"
    p.write_bytes(b"nope")
    with pytest.raises(StudyError):
        read_inv3(p)
