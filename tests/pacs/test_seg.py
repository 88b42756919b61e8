"""DICOM SEG (and Parametric Map) out of ``detect``: the SEG read back with highdicom is exactly the mask detect
computed, on the same grid, whatever the file order, slice direction or plane; it references the source
instances, frame of reference, patient and study; dciodvfy finds no errors; NIfTI studies refuse .dcm output."""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pacs_helpers import demo_volume, oblique, reversed_slices

from app.cli import main
from app.data.head_ct import write_dicom_series
from app.io import load_mask, load_study
from app.io.seg import SEGMENT_LABEL, AlgorithmInfo, read_seg, write_seg

ALGO = AlgorithmInfo("tiny", "ae-l1", "ab" * 32, 0.05, 0.1, "0.1.0")


def _series(tmp_path, layout: str):
    vol, aff = demo_volume()
    if layout in ("reversed", "reversed-oblique"):
        vol, aff = reversed_slices(vol, aff)
    if layout in ("oblique", "reversed-oblique"):
        aff = oblique(aff, 15.0)
    folder = tmp_path / layout
    paths = write_dicom_series(vol, aff, folder, modality="MR", patient=("MG^Seg", "mg-seg"))
    # shuffled, meaningless file names: the reader must order by position, and so must the SEG
    names = [f"IMG{i:03d}" for i in random.Random(3).sample(range(100), len(paths))]
    for p, n in zip(paths, names, strict=True):
        os.rename(p, folder / n)
    return folder


def _dciodvfy(path) -> str:
    exe = shutil.which("dciodvfy")
    if exe is None:
        why = "dciodvfy not installed: apt-get install dicom3tools"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must validate the SEG: {why}")
        pytest.skip(why)
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


@pytest.mark.parametrize("layout", ["plain", "reversed", "oblique", "reversed-oblique"])
def test_seg_round_trip_on_the_source_grid(tmp_path, layout):
    import highdicom as hd

    folder = _series(tmp_path, layout)
    study = load_study(folder)
    rng = np.random.default_rng(1)
    mask = rng.random(study.shape) > 0.8
    mask[:, :, 1] = False  # an empty slice: its frame is omitted, and must read back empty
    out = write_seg(study, mask, tmp_path / "seg.dcm", ALGO)
    np.testing.assert_array_equal(read_seg(out, study), mask)

    # independently of our reader: highdicom's frames by source instance == the mask on each source image
    seg = hd.seg.segread(out)
    for f in sorted(folder.iterdir()):
        src = pydicom.dcmread(f)
        px = seg.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[1])[0, :, :, 0]
        k = study.meta["dicom_files"].index(str(f))
        expected = study.to_original(mask)[:, :, k].T  # (rows, columns) of this source image
        np.testing.assert_array_equal(px.astype(bool), expected)
        assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
        assert seg.StudyInstanceUID == src.StudyInstanceUID
        assert seg.PatientID == src.PatientID and str(seg.PatientName) == str(src.PatientName)
    refs = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs == {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in folder.iterdir()}


def test_seg_segment_and_algorithm_identification(tmp_path):
    folder = _series(tmp_path, "plain")
    study = load_study(folder)
    out = write_seg(study, np.zeros(study.shape, bool) | (study.data > 100), tmp_path / "seg.dcm", ALGO)
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.SegmentationType == "BINARY"
    (seg,) = ds.SegmentSequence
    assert seg.SegmentLabel == SEGMENT_LABEL and seg.SegmentAlgorithmType == "AUTOMATIC"
    cat, typ = seg.SegmentedPropertyCategoryCodeSequence[0], seg.SegmentedPropertyTypeCodeSequence[0]
    assert (cat.CodingSchemeDesignator, cat.CodeValue) == ("SCT", "49755003")  # morphologically abnormal structure
    assert (typ.CodingSchemeDesignator, typ.CodeValue) == ("SCT", "52988006")  # lesion
    alg = seg.SegmentationAlgorithmIdentificationSequence[0]
    assert alg.AlgorithmName == "MatchGen tiny" and alg.AlgorithmVersion == "0.1.0"
    assert alg.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    params = alg.AlgorithmParameters
    for part in ("family=ae-l1", "eps=0.05", "tau=0.1", "card_sha256=" + "ab" * 32):
        assert part in params


def test_detect_writes_seg_equal_to_its_mask_and_valid(tmp_path, tiny_model_dir, capsys):
    folder = _series(tmp_path, "reversed-oblique")
    nii, seg, maps = tmp_path / "mask.nii.gz", tmp_path / "seg.dcm", tmp_path / "maps"
    base = ["detect", str(folder), "--model", str(tiny_model_dir / "tiny"), "--max-steps", "10"]
    assert main([*base, "--out", str(nii), "--seg", str(seg), "--maps", str(maps)]) == 0, capsys.readouterr().err
    study = load_study(folder)
    mask = load_mask(nii, study)
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(read_seg(seg, study), mask)
    # --out SEG.dcm alone gives the same SEG content
    seg2 = tmp_path / "seg2.dcm"
    assert main([*base, "--out", str(seg2)]) == 0
    np.testing.assert_array_equal(read_seg(seg2, study), mask)
    report = _dciodvfy(seg)
    assert "Error" not in report, report
    # the difference map as a Parametric Map, on the same grid as the NIfTI map
    import highdicom as hd

    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(maps / "difference_map.dcm"))
    d = study.from_original(np.asarray(nib.load(maps / "difference.nii.gz").dataobj))
    frames = np.transpose(study.to_original(d), (2, 1, 0))
    by_uid = {
        pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: k for k, f in enumerate(study.meta["dicom_files"])
    }
    pm_frames = pm.pixel_array
    for i, item in enumerate(pm.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose(pm_frames[i], frames[by_uid[uid]], atol=1e-6)
    assert "Error" not in _dciodvfy(maps / "difference_map.dcm")


def test_nifti_study_refuses_dcm_output(tmp_path, tiny_model_dir, capsys):
    vol, aff = demo_volume()
    p = tmp_path / "study.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), p)
    out = tmp_path / "seg.dcm"
    code = main(["detect", str(p), "--model", str(tiny_model_dir / "tiny"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "DICOM SEG output needs a study read from DICOM" in err and ".nii.gz" in err
    assert not out.exists()


def test_seg_of_another_series_is_refused(tmp_path):
    a = load_study(_series(tmp_path, "plain"))
    b = load_study(_series(tmp_path, "oblique"))
    out = write_seg(a, a.data > 100, tmp_path / "seg.dcm", ALGO)
    from app.errors import StudyError

    with pytest.raises(StudyError, match="segments another series"):
        read_seg(out, b)


def test_batch_writes_a_seg_per_dicom_series_equal_to_its_mask(tmp_path, tiny_model_dir, capsys):
    """batch over a folder with two DICOM series (one reversed + oblique, shuffled names) and a NIfTI study: each
    series gets DIR/<id>/mask.seg.dcm, listed in result.json, whose frames read back (highdicom) equal the NIfTI
    mask on the source grid, and which dciodvfy passes; the NIfTI study gets no SEG."""
    import json

    import highdicom as hd

    archive = tmp_path / "archive"
    archive.mkdir()
    a = _series(archive, "plain")
    b = _series(archive, "reversed-oblique")
    vol, aff = demo_volume()
    nib.save(nib.Nifti1Image(vol, aff), archive / "nifti.nii.gz")
    out = tmp_path / "out"
    args = ["batch", str(archive), "--model", str(tiny_model_dir / "tiny"), "--out", str(out), "--max-steps", "10"]
    code = main([*args, "--local-threads", "--workers", "1", "--no-dashboard", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    results = {
        json.loads(p.read_text())["input"]["source"]: json.loads(p.read_text()) for p in out.glob("*/result.json")
    }
    assert set(results) == {str(a), str(b), str(archive / "nifti.nii.gz")}
    assert "seg" not in results[str(archive / "nifti.nii.gz")]["outputs"]
    flagged = 0
    for folder in (a, b):
        r = results[str(folder)]
        assert r["status"] == "ok" and r["outputs"]["seg"] == "mask.seg.dcm"
        seg_path = out / r["id"] / "mask.seg.dcm"
        study = load_study(folder)
        mask = load_mask(out / r["id"] / "mask.nii.gz", study)
        flagged += int(mask.sum())
        np.testing.assert_array_equal(read_seg(seg_path, study), mask)
        # independently of our reader: highdicom's frame per source image == the NIfTI mask on that image
        seg = hd.seg.segread(seg_path)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == r["input"]["series_uid"]
        frames = np.transpose(study.to_original(mask), (2, 1, 0))
        for k, f in enumerate(study.meta["dicom_files"]):
            uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
            px = seg.get_pixels_by_source_instance([uid], segment_numbers=[1])[0, :, :, 0]
            np.testing.assert_array_equal(px > 0, frames[k])
        alg = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert alg.AlgorithmName == "MatchGen tiny" and f"eps={r['eps']:g}" in alg.AlgorithmParameters
        report = _dciodvfy(seg_path)
        assert "Error" not in report, report
    assert flagged > 0  # the SEGs hold a detection, not only empty frames
