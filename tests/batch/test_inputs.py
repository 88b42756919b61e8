"""Batch inputs: files, folders searched recursively (NIfTI, DICOM grouped by series), globs, .txt and .csv lists;
unique, stable, readable study ids."""

import numpy as np
import pytest
from batch_helpers import write_phantom

from app.batch.inputs import expand_inputs
from app.errors import OptionError


def _dicom_series(folder, uid, number, n=3, seed=0, prefix="im"):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{prefix}{i}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = number
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * i]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [2.0, 2.0]
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = rng.integers(0, 1000, (8, 8), dtype=np.uint16).tobytes()
        ds.save_as(folder / f"{prefix}{i}.dcm", enforce_file_format=True)


def test_folders_series_globs_and_lists(tmp_path):
    arch = tmp_path / "archive"
    for p in ("p001", "p002"):
        (arch / p).mkdir(parents=True)
        write_phantom(arch / p / "T1.nii.gz", int(p[-1]))
    # two series mixed in one folder, a third in a nested folder, and a file that is not an image
    _dicom_series(arch / "p003" / "mixed", "1.2.3.1", 4, prefix="a")
    _dicom_series(arch / "p003" / "mixed", "1.2.3.2", 5, n=2, prefix="b")
    _dicom_series(arch / "p004" / "study" / "series7", "1.2.3.3", 7)
    (arch / "p004" / "README").write_text("not an image")
    refs = expand_inputs([str(arch)])
    by = {r.id: r for r in refs}
    assert set(by) == {"p001_T1", "p002_T1", "mixed_s4", "mixed_s5", "series7_s7"}
    assert {r.id: len(r.files) for r in refs if r.kind == "dicom-series"} == {
        "mixed_s4": 3,
        "mixed_s5": 2,
        "series7_s7": 3,
    }
    assert by["mixed_s5"].series_uid == "1.2.3.2"
    assert expand_inputs([str(arch)]) == refs  # stable
    # a series is read as one volume from its own files only
    from app.io.dicom import load_dicom_series

    st = load_dicom_series(list(by["mixed_s4"].files), by["mixed_s4"].source)
    assert st.shape == (8, 8, 3) and st.spacing == pytest.approx((2.0, 2.0, 3.0))

    # globs and lists (relative paths resolve against the list's folder), duplicates dropped
    g = expand_inputs([str(arch / "*" / "T1.nii.gz")])
    assert [r.id for r in g] == ["p001_T1", "p002_T1"]
    (tmp_path / "list.txt").write_text("# studies\narchive/p001/T1.nii.gz\n\narchive/p001/T1.nii.gz\n")
    assert [r.id for r in expand_inputs([str(tmp_path / "list.txt")])] == ["T1"]
    (tmp_path / "list.csv").write_text("id,path\nfirst,archive/p001/T1.nii.gz\nsecond,archive/p002/T1.nii.gz\n")
    assert [r.id for r in expand_inputs([str(tmp_path / "list.csv")])] == ["first", "second"]


def test_results_in_the_archive_are_not_studies(tmp_path):
    """A DICOM SEG written beside its series (a study retrieved again after ``--send``) is no study of its own;
    a folder that holds only results says what it left out."""
    from app.data.head_ct import write_dicom_series
    from app.io import load_study
    from app.io.seg import AlgorithmInfo, write_seg

    arch = tmp_path / "archive"
    raw = np.random.default_rng(4).integers(0, 100, size=(8, 8, 4)).astype(np.float32)
    write_dicom_series(raw, np.diag([2.0, 2.0, 3.0, 1.0]), arch / "p001" / "t1", modality="MR")
    study = load_study(arch / "p001" / "t1")
    (arch / "p001" / "seg").mkdir()
    write_seg(study, study.data > 50, arch / "p001" / "seg" / "mask.seg.dcm",
              AlgorithmInfo("tiny", "ae-l1", "ab" * 32, 0.05, 0.1, "0.1.0"))  # fmt: skip
    # another tool's files of the names a batch writes do not make a folder a batch output
    (arch / "p002").mkdir()
    write_phantom(arch / "p002" / "T1.nii.gz", 2)
    (arch / "p002" / "result.json").write_text('{"accuracy": 0.9}')
    (arch / "p002" / "worklist.json").write_text('{"studies": []}')
    from app.viewer.worklist import is_batch_output

    assert not is_batch_output(arch / "p002")
    refs = expand_inputs([str(arch)])
    assert sorted((r.id, len(r.files)) for r in refs) == [("T1", 1), ("t1_s1", 4)]
    with pytest.raises(OptionError, match=r"left out: 1 x a DICOM SEG \(segmentation\): not studies"):
        expand_inputs([str(arch / "p001" / "seg")])


def test_bad_inputs_are_option_errors(tmp_path):
    with pytest.raises(OptionError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.nii.gz")])
    with pytest.raises(OptionError, match="matches nothing"):
        expand_inputs([str(tmp_path / "*.nii.gz")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError, match="no NIfTI"):
        expand_inputs([str(tmp_path / "empty")])
    (tmp_path / "e.txt").write_text("# nothing\n")
    with pytest.raises(OptionError, match="names no studies"):
        expand_inputs([str(tmp_path / "e.txt")])
