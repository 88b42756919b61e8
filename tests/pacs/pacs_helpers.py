"""Helpers of the PACS tests: small real series from the demo study, written by the project's own DICOM writer
(``app.data.head_ct.write_dicom_series``), and the seeding of the test Orthanc."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import orthanc as orthanc_mod  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "resources" / "demo" / "demo_t1.nii.gz"
BIG = 60  # instances in the "huge" series (progress, cancel, timeout mid-transfer)


def need_orthanc() -> None:
    why = orthanc_mod.missing()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the PACS tests: {why}")
        pytest.skip(why)


def demo_volume(n_slices: int = 5, step: int = 4):
    """A small real MR volume (canonical RAS, uint8 values) around the demo study's lesions, and its affine."""
    from app.io import load_study

    st = load_study(DEMO)
    vol = st.data[::step, ::2]
    z_lesions = np.flatnonzero(vol.sum(axis=(0, 1)) > 0)
    mid = int(np.median(z_lesions))
    zs = slice(max(0, mid - n_slices // 2), max(0, mid - n_slices // 2) + n_slices)
    vol = np.ascontiguousarray(vol[:, :, zs])
    affine = st.affine @ np.diag([step, 2, 1, 1.0])
    affine[:3, 3] = st.affine[:3, :3] @ np.array([0, 0, zs.start]) + st.affine[:3, 3]
    return vol.astype(np.float32), affine


def oblique(affine: np.ndarray, degrees: float = 12.0) -> np.ndarray:
    a = np.deg2rad(degrees)
    rot = np.eye(4)
    rot[:3, :3] = [[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]
    return rot @ affine


def reversed_slices(vol: np.ndarray, affine: np.ndarray):
    """The same voxels written superior -> inferior (negative slice step)."""
    flip = np.eye(4)
    flip[2, 2] = -1
    flip[2, 3] = vol.shape[2] - 1
    return vol[:, :, ::-1].copy(), affine @ flip


def write_sr(folder: Path, study_uid: str, patient: tuple[str, str], text: str = "no findings") -> Path:
    """A Basic Text SR document (a non-image series) in the given study."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.PatientName, ds.PatientID = patient
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", 50, 1
    ds.SeriesDescription = "report"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20230310", "120000", "", ""
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    p = folder / "sr.dcm"
    ds.save_as(p, enforce_file_format=True)
    return p


@dataclass
class Seeded:
    server: orthanc_mod.Orthanc
    studies: dict = field(default_factory=dict)  # name -> study UID
    series: dict = field(default_factory=dict)  # name -> series UID
    files: dict = field(default_factory=dict)  # name -> list of paths

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def dimse(self) -> str:
        return self.server.dimse


def _uids(paths):
    import pydicom

    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def seed(server: orthanc_mod.Orthanc, folder: Path) -> Seeded:
    from app.data.head_ct import write_dicom_series

    s = Seeded(server)
    vol, aff = demo_volume()

    def add(name, vol, aff, patient, extra=None, study_uid=None, description=None):
        paths = write_dicom_series(
            vol, aff, folder / name, description=description or name, modality="MR", patient=patient,
            study_uid=study_uid, extra=extra or {},
        )
        server.upload(paths)
        s.studies[name], s.series[name] = _uids(paths)
        s.files[name] = paths
        return paths

    add("demo", vol, aff, ("MG^Demo", "mg-demo"),
        {"StudyDate": "20240105", "AccessionNumber": "ACC-DEMO", "StudyDescription": "Brain MRI demo",
         "PatientBirthDate": "19700101"})
    add("send", *reversed_slices(vol, oblique(aff)), ("MG^Send", "mg-send"),
        {"StudyDate": "20240220", "StudyDescription": "detect and send"})
    two = add("two-a", vol, aff, ("MG^Two", "mg-two"), {"StudyDate": "20230310", "SeriesNumber": 1})
    add("two-b", *reversed_slices(vol, aff), ("MG^Two", "mg-two"), {"StudyDate": "20230310", "SeriesNumber": 2},
        study_uid=_uids(two)[0])
    sr = write_sr(folder / "two-sr", _uids(two)[0], ("MG^Two", "mg-two"))
    server.upload([sr])
    s.series["two-sr"] = _uids([sr])[1]
    from pydicom.uid import generate_uid

    empty_study = generate_uid()
    server.upload([write_sr(folder / "empty", empty_study, ("MG^Empty", "mg-empty"))])
    s.studies["empty"] = empty_study
    add("reject", vol, aff, ("MG^Reject", orthanc_mod.REJECT_PATIENT), {"StudyDate": "20220101"})
    big = np.repeat(vol[:, :, :1], BIG, axis=2)  # ~2 KB per instance, ~130 KB in all
    add("big", big, aff, ("MG^Big", "mg-big"), {"StudyDate": "20210101"})
    return s


def run_cli(capsys, *argv):
    """``main(argv)`` with its exit code and captured output; the password never appears in either stream."""
    from app.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert orthanc_mod.PASSWORD not in out and orthanc_mod.PASSWORD not in err
    return code, out, err
