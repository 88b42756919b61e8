import numpy as np
import pytest

from app.data.normalize import CT_WINDOWS, normalize, normalize_ct, normalize_mri
from app.errors import OptionError, StudyError


def test_mri_percentile_of_foreground():
    v = np.zeros((10, 10, 10), np.float32)
    v[2:8, 2:8, 2:8] = np.linspace(1, 200, 216).reshape(6, 6, 6)
    nz = v[v > 0]
    fg = v[v > 0.05 * np.percentile(nz, 99)]  # the documented foreground
    out = normalize_mri(v)
    top = np.percentile(fg, 99.5)
    assert out.max() == 1.0 and out.min() == 0.0
    np.testing.assert_allclose(out[v > 0], np.clip(nz / top, 0, 1), rtol=1e-5)
    # background does not change the scale (that is what "of the foreground" means)
    v2 = v.copy()
    v2[0, 0, :] = 3.0  # faint noise below 5 % of p99
    np.testing.assert_allclose(normalize_mri(v2)[v > 0], out[v > 0], rtol=1e-6)


def test_ct_windows():
    hu = np.array([-1000, 0, 40, 80, 1000], np.float32)
    np.testing.assert_allclose(normalize_ct(hu, "brain"), [0, 0, 0.5, 1, 1])
    level, width = CT_WINDOWS["bone"]
    assert normalize_ct(np.array([level], np.float32), "bone")[0] == pytest.approx(0.5)
    np.testing.assert_allclose(normalize(hu, "ct-window:soft-tissue"), np.clip((hu + 150) / 400, 0, 1))
    with pytest.raises(OptionError):
        normalize(hu, "ct-window:lung-ish")


def test_unit_and_errors():
    np.testing.assert_allclose(normalize(np.array([0, 51, 255.0]), "unit", 255.0), [0, 0.2, 1])
    with pytest.raises(StudyError):
        normalize_mri(np.zeros((4, 4, 4)))
    with pytest.raises(OptionError):
        normalize(np.ones(3), "zscore")
