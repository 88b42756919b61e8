"""A real normal head CT (the InVesalius example project ``Cranium.inv3``, Debian ``invesalius-examples``,
GPL-2) as NIfTI and as a multi-file DICOM series written by the project: material for CT windowing, a CT model,
and trying the DICOM path on real pixels (``python main.py data head-ct --out DIR``).

An ``.inv3`` file is a gzipped tar holding ``main.plist`` (shape, dtype, spacing, modality) and ``matrix.dat``,
the raw volume indexed [slice, row, column]. In this project the slices run inferior -> superior and the rows
posterior -> anterior (checked by eye: skull base at slice 0, face at the last rows); columns are taken to run
towards the patient's left, as in a standard axial DICOM image (the file does not say).
"""

from __future__ import annotations

import os
import plistlib
import tarfile
from pathlib import Path

import numpy as np

from app.errors import StudyError

INV3_MEMBER = "usr/share/doc/invesalius-examples/examples/Cranium.inv3"


def read_inv3(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """(volume (X, Y, Z) in HU as int16, affine (RAS mm), main.plist as a dict)."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            if "main.plist" not in members:
                raise StudyError(f"{path.name}: no main.plist (not an InVesalius project)")
            main = plistlib.loads(tar.extractfile(members["main.plist"]).read())
            mat = main["matrix"]
            raw = tar.extractfile(members[mat["filename"]]).read()
    except (tarfile.TarError, OSError, EOFError, KeyError, plistlib.InvalidFileException) as exc:
        raise StudyError(f"{path.name}: not a readable InVesalius project ({exc})") from None
    shape = tuple(int(v) for v in mat["shape"])
    dtype = np.dtype(mat.get("dtype", "int16"))
    n = int(np.prod(shape))
    arr = np.frombuffer(raw, dtype=dtype)
    if arr.size < n:
        raise StudyError(f"{path.name}: matrix has {arr.size} values, expected {n}")
    vol = arr[-n:].reshape(shape)  # [slice, row, column]
    sx, sy, sz = (float(v) for v in main.get("spacing", (1.0, 1.0, 1.0)))
    data = np.ascontiguousarray(np.transpose(vol, (2, 1, 0)))  # (column, row, slice)
    # columns -> patient's left, rows -> anterior, slices -> superior
    affine = np.diag([-sx, sy, sz, 1.0])
    return data, affine, main


def write_dicom_series(
    volume_hu: np.ndarray,
    affine: np.ndarray,
    out_dir,
    description: str = "head CT",
    modality: str = "CT",
    patient: tuple[str, str] = ("Anonymous^HeadCT", "matchgen-head-ct"),
    study_uid: str | None = None,
    extra: dict | None = None,
) -> list[Path]:
    """Write a (X, Y, Z) HU volume as one CT DICOM file per slice of its third axis (uint16 with
    RescaleIntercept -1024), with patient geometry from ``affine`` (RAS; any orientation, oblique too). With
    ``modality="MR"`` the values (>= 0) are stored as they are in MR Image Storage files. ``patient`` is
    (PatientName, PatientID); ``study_uid`` adds the series to an existing study; ``extra`` sets further
    attributes by keyword (StudyDate, AccessionNumber, SeriesNumber, ...). Files are written atomically;
    returns their paths."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be CT or MR, got {modality!r}")
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vol = np.asarray(volume_hu)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    col_step, row_step, slice_step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    dc, dr = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    iop = [*(col_step / dc), *(row_step / dr)]
    offset = 1024 if modality == "CT" else 0
    stored = np.clip(np.rint(vol.astype(np.float64) + offset), 0, 65535).astype(np.uint16)
    study_uid, series_uid, frame_uid = study_uid or generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(vol.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality = modality
        ds.PatientName, ds.PatientID = patient
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        # type-2 attributes of the patient, study, series and equipment modules (empty = unknown)
        ds.PatientBirthDate, ds.PatientSex = "", ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", "", "", ""
        ds.PositionReferenceIndicator, ds.Manufacturer = "", "MatchGen Viewer"
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in lps[:3, 3] + k * slice_step]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = [dr, dc]
        ds.SliceThickness = float(np.linalg.norm(slice_step))
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        if modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
            ds.WindowCenter, ds.WindowWidth = 40, 80
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows = Y index, columns = X index
        p = out / f"{modality}{k + 1:04d}.dcm"
        tmp = out / f".{p.name}.part"
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, p)
        paths.append(p)
    return paths


def build_head_ct(out, log=print) -> dict:
    """DIR/head_ct.nii.gz, DIR/dicom/CT0001.dcm ..., DIR/SOURCE.txt from the cached Debian package."""
    from app.atomic import atomic_write_text
    from app.data.sources import PACKAGES, fetch
    from app.io import atomic_save_nifti

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = fetch("invesalius-examples", log)
    vol, affine, main = read_inv3(root / INV3_MEMBER)
    atomic_save_nifti(vol.astype(np.int16), affine, out / "head_ct.nii.gz")
    files = write_dicom_series(vol, affine, out / "dicom", description=str(main.get("name", "head CT")))
    atomic_write_text(
        out / "SOURCE.txt",
        "Real normal head CT from Cranium.inv3 in the Debian package invesalius-examples "
        f"({PACKAGES['invesalius-examples'].licence}).\nDICOM headers written by MatchGen Viewer "
        "(app/data/head_ct.py); pixels are the original Hounsfield units.\n",
    )
    log(f"wrote {out / 'head_ct.nii.gz'} {vol.shape} and {len(files)} DICOM files in {out / 'dicom'}")
    return {"shape": list(vol.shape), "files": len(files)}
