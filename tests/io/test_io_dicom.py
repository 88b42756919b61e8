"""DICOM: series sorted by position (not file name or InstanceNumber), rescale applied, geometry to RAS, several
series in a folder, multi-frame files, and the real files shipped in pydicom."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from app.errors import StudyError
from app.io import load_study

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _slice_ds(pixels, ipp, iop, spacing, series_uid, instance, slope=2.0, intercept=-1024.0, modality="CT"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3"
    ds.Modality = modality
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def _write_series(folder, raw, iop, spacing=(0.8, 0.6), dz=2.5, origin=(10.0, -20.0, 30.0), seed=0, **kw):
    """raw: (slices, rows, cols). Files get shuffled names and InstanceNumbers opposite to position order."""
    folder.mkdir(parents=True, exist_ok=True)
    r, c = np.array(iop[:3]), np.array(iop[3:])
    n = np.cross(r, c)
    uid = generate_uid()
    order = np.random.default_rng(seed).permutation(len(raw))
    for k in range(len(raw)):
        ipp = np.array(origin) + k * dz * n
        ds = _slice_ds(raw[k], ipp, iop, spacing, uid, instance=len(raw) - k, **kw)
        ds.save_as(folder / f"img{order[k]:03d}.dcm", enforce_file_format=True)
    return uid


def _world_ras(ipp_origin, iop, spacing, dz, k, row, col):
    r, c = np.array(iop[:3]), np.array(iop[3:])
    lps = np.array(ipp_origin) + k * dz * np.cross(r, c) + col * spacing[1] * r + row * spacing[0] * c
    return lps * np.array([-1, -1, 1])


@pytest.mark.parametrize(
    "iop",
    [
        (1, 0, 0, 0, 1, 0),  # axial
        (0, 1, 0, 0, 0, -1),  # sagittal
        (1, 0, 0, 0, 0, -1),  # coronal
        (0.8660254, 0.5, 0, -0.5, 0.8660254, 0),  # oblique axial
    ],
)
def test_shuffled_series_with_slope(tmp_path, iop):
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 1000, size=(5, 12, 10)).astype(np.uint16)
    raw[3, 4, 7] = 3000  # marker: slice 3, row 4, column 7
    _write_series(tmp_path / "s", raw, iop)
    s = load_study(tmp_path / "s")
    assert s.modality == "CT" and s.shape[0] * s.shape[1] * s.shape[2] == raw.size
    # rescale applied: HU = 2 * raw - 1024
    assert s.data.max() == pytest.approx(2 * 3000 - 1024)
    np.testing.assert_allclose(np.sort(s.data.ravel()), np.sort(2.0 * raw.ravel() - 1024))
    # the marker sits where DICOM geometry puts it in the world (RAS)
    v = np.array(np.unravel_index(int(np.argmax(s.data)), s.shape))
    world = (s.affine @ np.r_[v, 1.0])[:3]
    np.testing.assert_allclose(world, _world_ras((10.0, -20.0, 30.0), iop, (0.8, 0.6), 2.5, 3, 4, 7), atol=1e-4)
    assert sorted(s.spacing) == pytest.approx(sorted((0.6, 0.8, 2.5)))


def test_folder_with_several_series_reads_the_largest(tmp_path):
    raw = np.random.default_rng(2).integers(0, 100, size=(6, 8, 8)).astype(np.uint16)
    _write_series(tmp_path / "study" / "a", raw, (1, 0, 0, 0, 1, 0))
    _write_series(tmp_path / "study" / "b", raw[:3], (1, 0, 0, 0, 1, 0))
    (tmp_path / "study" / "notes.txt").write_text("not DICOM")
    s = load_study(tmp_path / "study")
    assert s.shape[2] == 6
    assert any("2 series" in w and "3 file(s)" in w for w in s.warnings)


def test_derived_objects_beside_a_series_are_not_read_as_images(tmp_path):
    """A SEG and a parametric map this program wrote beside a series (e.g. a study folder retrieved again from the
    PACS after ``--send``) hold pixels but are results: the folder reads as its image series alone, a folder of
    only results says what it left out, and a SEG opened as a study says what it is."""
    from app.data.head_ct import write_dicom_series
    from app.io.seg import AlgorithmInfo, write_parametric_map, write_seg

    raw = np.random.default_rng(3).integers(0, 100, size=(8, 8, 5)).astype(np.float32)
    folder = tmp_path / "study"
    write_dicom_series(raw, np.diag([2.0, 2.0, 3.0, 1.0]), folder / "t1", modality="MR")
    study = load_study(folder)
    algo = AlgorithmInfo("tiny", "ae-l1", "ab" * 32, 0.05, 0.1, "0.1.0")
    seg = write_seg(study, study.data > 50, folder / "mask.seg.dcm", algo)
    (tmp_path / "maps").mkdir()
    pm = write_parametric_map(study, np.clip(study.data / 200.0, 0, 1), tmp_path / "maps" / "d.dcm", algo)
    again = load_study(folder)
    assert again.shape == study.shape and again.modality == "MR"
    np.testing.assert_array_equal(again.data, study.data)
    assert not any("series found" in w for w in again.warnings), again.warnings  # the SEG is no second series
    with pytest.raises(StudyError, match=r"left out: 1 x a DICOM parametric map"):
        load_study(pm.parent)
    with pytest.raises(StudyError, match=r"a DICOM SEG \(segmentation\), not an image to analyse"):
        load_study(seg)


def test_uneven_spacing_is_reported(tmp_path):
    raw = np.ones((4, 6, 6), np.uint16)
    raw[0] = 5
    uid = generate_uid()
    d = tmp_path / "u"
    d.mkdir()
    for k, z in enumerate([0.0, 2.0, 4.0, 9.0]):
        _slice_ds(raw[k], (0, 0, z), (1, 0, 0, 0, 1, 0), (1, 1), uid, k).save_as(
            d / f"{k}.dcm", enforce_file_format=True
        )
    s = load_study(d)
    assert any("uneven" in w for w in s.warnings)


def test_multiframe_with_per_frame_positions(tmp_path):
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 500, size=(4, 6, 5)).astype(np.uint16)
    ds = _slice_ds(
        raw[0], (0, 0, 0), (1, 0, 0, 0, 1, 0), (1.0, 1.0), generate_uid(), 1, slope=1.0, intercept=0.0, modality="MR"
    )
    perm = [2, 0, 3, 1]  # frames stored out of order; positions say where each belongs
    ds.NumberOfFrames = 4
    ds.PixelData = raw[perm].astype(np.uint16).tobytes()
    frames = []
    for f in perm:
        fg = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [0.0, 0.0, 3.0 * f]
        fg.PlanePositionSequence = [pp]
        frames.append(fg)
    ds.PerFrameFunctionalGroupsSequence = frames
    sh = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = [1.0, 0, 0, 0, 1.0, 0]
    pm = Dataset()
    pm.PixelSpacing = [1.0, 1.0]
    sh.PlaneOrientationSequence = [po]
    sh.PixelMeasuresSequence = [pm]
    ds.SharedFunctionalGroupsSequence = [sh]
    p = tmp_path / "mf.dcm"
    ds.save_as(p, enforce_file_format=True)
    s = load_study(p)
    assert s.shape == (5, 6, 4) and s.modality == "MR"
    assert s.spacing == pytest.approx((1.0, 1.0, 3.0))
    # canonical slice k is frame k (LPS rows/cols flipped to RAS)
    for k in range(4):
        np.testing.assert_array_equal(s.data[:, :, k], raw[k].T[::-1, ::-1])


def test_empty_and_non_image_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match="no DICOM images"):
        load_study(tmp_path / "empty")
    with pytest.raises(StudyError, match="a DICOM RTPLAN object, not an image to analyse"):
        load_study(TEST_FILES / "rtplan.dcm")


# ---- real files shipped inside pydicom --------------------------------------------------------------------------
def test_pydicom_ct_small_in_hounsfield_units():
    s = load_study(TEST_FILES / "CT_small.dcm")
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    assert s.modality == "CT" and s.shape == (128, 128, 1)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(np.sort(s.data.ravel()), np.sort(expected.ravel()))
    assert s.data.min() < -500  # air in HU


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_pydicom_encodings_decode_to_the_same_image(name):
    ref = load_study(TEST_FILES / "MR_small.dcm")
    s = load_study(TEST_FILES / name)
    np.testing.assert_array_equal(s.data, ref.data)
    np.testing.assert_allclose(s.affine, ref.affine)


def test_pydicom_rgb_and_multiframe_files():
    s = load_study(TEST_FILES / "SC_rgb_rle_2frame.dcm")
    assert s.channels == 3 and s.shape[2] == 2
    s = load_study(TEST_FILES / "examples_ybr_color.dcm")
    assert s.channels == 3 and s.shape[2] == 30


def test_missing_decoder_names_the_plugin(monkeypatch):
    from app.io import dicom

    monkeypatch.setattr(dicom, "_decoder_available", lambda uid: False)
    ds = pydicom.dcmread(TEST_FILES / "MR_small_jpeg_ls_lossless.dcm")
    monkeypatch.setattr(
        type(ds), "pixel_array", property(lambda self: (_ for _ in ()).throw(RuntimeError("no handler")))
    )
    with pytest.raises(StudyError, match="pip install pylibjpeg pylibjpeg-libjpeg"):
        dicom._pixels(ds, "x.dcm")


def test_pydicom_data_multiframe_if_installed():
    from pydicom.data import get_testdata_file

    try:
        p = get_testdata_file("emri_small.dcm", download=False)
    except Exception:  # noqa: BLE001
        p = None
    if p is None:
        pytest.skip("pydicom-data is not installed (optional)")
    s = load_study(p)
    assert s.shape[2] == 10 and s.modality == "MR"


def test_decoder_panic_becomes_study_error(monkeypatch):
    """Rust decoders (pylibjpeg-rle) panic with a BaseException on some damaged files (found by the fuzz test)."""
    from app.io import dicom

    class Panic(BaseException):
        pass

    ds = pydicom.dcmread(TEST_FILES / "MR_small_RLE.dcm")
    monkeypatch.setattr(type(ds), "pixel_array", property(lambda self: (_ for _ in ()).throw(Panic("index out"))))
    with pytest.raises(StudyError, match="cannot be decoded"):
        dicom._pixels(ds, "x.dcm")
