"""Fuzzing the loaders with mutated real files (pydicom's and nibabel's test data, a PNG): whatever the damage,
``load_study`` either returns a usable study or raises the project's StudyError, never anything else."""

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.errors import StudyError
from app.io import load_study

PYDICOM = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL = Path(nib.__file__).parent / "tests" / "data"


def _png_bytes():
    buf = io.BytesIO()
    Image.fromarray(np.arange(24 * 20, dtype=np.uint8).reshape(24, 20)).save(buf, format="PNG")
    return buf.getvalue()


SEEDS = {
    "MR_small.dcm": (PYDICOM / "MR_small.dcm").read_bytes(),
    "CT_small.dcm": (PYDICOM / "CT_small.dcm").read_bytes(),
    "MR_small_RLE.dcm": (PYDICOM / "MR_small_RLE.dcm").read_bytes(),
    "standard.nii": gzip.decompress((NIBABEL / "standard.nii.gz").read_bytes()),
    "example_nifti2.nii": gzip.decompress((NIBABEL / "example_nifti2.nii.gz").read_bytes()),
    "standard.nii.gz": (NIBABEL / "standard.nii.gz").read_bytes(),
    "test.mgz": (NIBABEL / "test.mgz").read_bytes(),
    "picture.png": _png_bytes(),
}

mutation = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("header"), st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), min_size=1, max_size=6)),
)


def _mutate(data: bytes, m) -> bytes:
    kind, arg = m
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[: int(arg * len(b))])
    for pos, val in arg:
        i = int(pos * (len(b) - 1)) if isinstance(pos, float) else min(pos, len(b) - 1)
        b[i] = val
    return bytes(b)


@pytest.mark.parametrize("name", sorted(SEEDS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=mutation)
def test_mutated_files_fail_cleanly(tmp_path, name, m):
    p = tmp_path / name
    p.write_bytes(_mutate(SEEDS[name], m))
    try:
        s = load_study(p)
    except StudyError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert np.isfinite(s.data).all() and s.data.ndim in (3, 4)
    assert s.to_original(s.data).shape[:3] == s.original_shape


def _series_bytes():
    """Three slices of CT_small at different positions (a small real-pixel series)."""
    out = []
    for k in range(3):
        ds = pydicom.dcmread(PYDICOM / "CT_small.dcm")
        ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1]), 5.0 * k]
        ds.InstanceNumber = 3 - k
        ds.SOPInstanceUID = f"1.2.3.4.{k}"
        buf = io.BytesIO()
        ds.save_as(buf)
        out.append(buf.getvalue())
    return out


SERIES = _series_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), m=mutation)
def test_series_with_a_damaged_slice_fails_cleanly(tmp_path, which, m):
    d = tmp_path / "series"
    d.mkdir(exist_ok=True)
    for k, data in enumerate(SERIES):
        (d / f"s{k}.dcm").write_bytes(_mutate(data, m) if k == which else data)
    try:
        s = load_study(d)
    except StudyError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert np.isfinite(s.data).all() and 1 <= s.shape[2] <= 3
