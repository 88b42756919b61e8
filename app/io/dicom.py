"""DICOM to a :class:`Study`: a single image, a multi-frame file, or a folder with one or several series.

- A folder is scanned recursively; files that are not DICOM images are skipped, and so are objects that hold
  pixels but are not images to analyse (:func:`not_an_image`: a DICOM SEG, a parametric map, an RT dose -- e.g.
  the SEG this program wrote beside a series). Images are grouped by SeriesInstanceUID and the largest series is
  read; the others are listed in the study's warnings.
- Slices are ordered by ImagePositionPatient projected on the slice normal (row x column direction of
  ImageOrientationPatient), never by InstanceNumber, and the slice spacing is the median of those projections'
  steps (a warning names uneven spacing).
- RescaleSlope/RescaleIntercept are applied (Hounsfield units for CT); MONOCHROME1 is inverted.
- Compressed transfer syntaxes decode through pydicom's pixel-data plugins; if none is installed for a syntax,
  the error names the packages to install.
- The affine maps (column, row, slice) indices to RAS millimetres (DICOM's patient space is LPS).
"""

from __future__ import annotations

import os
import struct
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from app.errors import StudyError
from app.io.study import Study, make_study, one_line

#: transfer syntax UID -> the pip packages that decode it (a readable hint in errors)
CODEC_HINTS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg (or pillow)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg (or pillow)",
}

RLE_LOSSLESS = "1.2.840.10008.1.2.5"

#: modalities of objects that are not images to analyse (reports, annotations, segmentations, plans, documents)
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "SEG", "PR", "KO", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "DOC", "REG", "AU", "ECG", "PLAN", "FID"}
)
#: SOP classes that carry pixels but hold results derived from images, whatever their Modality says
DERIVED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a DICOM SEG (segmentation)",
    "1.2.840.10008.5.1.4.1.1.66.5": "a DICOM surface segmentation",
    "1.2.840.10008.5.1.4.1.1.66.7": "a DICOM label map segmentation",
    "1.2.840.10008.5.1.4.1.1.30": "a DICOM parametric map",
    "1.2.840.10008.5.1.4.1.1.481.2": "an RT dose",
}
#: the header elements a folder scan reads of each file (:func:`series_header`): the series, whether it is an image,
#: and what it is (:func:`not_an_image`)
SERIES_TAGS = ["SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Rows", "Columns", "SOPClassUID", "Modality"]


def not_an_image(ds) -> str | None:
    """What a DICOM object is when it is not an image to analyse (e.g. "a DICOM SEG (segmentation)"), else None:
    its SOP class is a derived result (:data:`DERIVED_SOP_CLASSES`) or its Modality is not an imaging one
    (:data:`NON_IMAGE_MODALITIES`)."""
    sop = str(ds.get("SOPClassUID", "") or "")
    if sop in DERIVED_SOP_CLASSES:
        return DERIVED_SOP_CLASSES[sop]
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"a DICOM {modality} object"
    return None


MAX_FILES = 20000


def is_dicom_file(path: Path) -> bool:
    """True for files with the DICM preamble marker (or a .dcm file pydicom can parse without it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read(path: Path, header_only: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=header_only, force=not is_dicom_file(path))
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StudyError(f"{path.name}: not a readable DICOM file ({one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt files
        raise StudyError(f"{path.name}: not a readable DICOM file ({type(exc).__name__}: {one_line(exc)})") from None


def _is_image(ds) -> bool:
    return "Rows" in ds and "Columns" in ds and ("PixelData" in ds or "FloatPixelData" in ds or _header_only(ds))


def _header_only(ds) -> bool:
    return getattr(ds, "_matchgen_header_only", False)


def _floats(ds, name, n):
    v = ds.get(name)
    if v is None:
        return None
    try:
        arr = np.array([float(x) for x in (v if isinstance(v, list | tuple) or hasattr(v, "__iter__") else [v])])
    except (TypeError, ValueError):
        return None
    if arr.size != n or not np.all(np.isfinite(arr)):
        return None
    return arr


def _pixels(ds, path_name: str) -> np.ndarray:
    tsuid = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if tsuid == RLE_LOSSLESS and hasattr(ds, "pixel_array_options"):
        # pydicom's own numpy RLE decoder: pylibjpeg-rle, if installed, panics (uncatchable noise) on damaged data
        ds.pixel_array_options(decoding_plugin="pydicom")
    try:
        arr = ds.pixel_array
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - decoders raise anything, even a Rust panic (a BaseException)
        msg = one_line(exc)
        hint = CODEC_HINTS.get(tsuid)
        if hint and not _decoder_available(tsuid):
            raise StudyError(
                f"{path_name}: compressed DICOM (transfer syntax {tsuid}) needs a decoder plugin: pip install {hint}"
            ) from None
        raise StudyError(f"{path_name}: pixel data cannot be decoded ({msg})") from None
    return np.asarray(arr)


def _decoder_available(tsuid: str) -> bool:
    """Whether any installed pydicom plugin decodes this transfer syntax (so a failure means a damaged file)."""
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(tsuid).is_available)
    except Exception:  # noqa: BLE001 - pydicom 2 or an unknown syntax: assume no decoder
        return False


def _rescale(arr: np.ndarray, ds) -> np.ndarray:
    slope = ds.get("RescaleSlope", 1.0)
    intercept = ds.get("RescaleIntercept", 0.0)
    try:
        slope, intercept = float(slope if slope is not None else 1.0), float(intercept or 0.0)
    except (TypeError, ValueError):
        raise StudyError("RescaleSlope/RescaleIntercept are not numbers") from None
    out = arr.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        out = out * np.float32(slope) + np.float32(intercept)
    return out


def _monochrome1(arr: np.ndarray, ds) -> np.ndarray:
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        return float(arr.max()) + float(arr.min()) - arr
    return arr


def _modality(ds) -> str:
    m = str(ds.get("Modality", "") or "").upper()
    return m if m in ("CT", "MR") else "OT"


def _geometry(ds):
    """(row cosine, column cosine, pixel spacing (dr, dc), position) or None if the header lacks them."""
    iop = _floats(ds, "ImageOrientationPatient", 6)
    ipp = _floats(ds, "ImagePositionPatient", 3)
    ps = _floats(ds, "PixelSpacing", 2)
    if iop is None or ipp is None:
        return None
    r, c = iop[:3], iop[3:]
    if abs(np.linalg.norm(r) - 1) > 0.05 or abs(np.linalg.norm(c) - 1) > 0.05 or abs(r @ c) > 0.05:
        return None
    if ps is None or np.any(ps <= 0):
        ps = np.array([1.0, 1.0])
    return r / np.linalg.norm(r), c / np.linalg.norm(c), ps, ipp


def _affine(rowcos, colcos, ps, ipp, normal, dz) -> np.ndarray:
    """(column i, row j, slice k) -> RAS mm. DICOM: x along a row is rowcos * column spacing (ps[1])."""
    lps = np.eye(4)
    lps[:3, 0] = rowcos * ps[1]
    lps[:3, 1] = colcos * ps[0]
    lps[:3, 2] = normal * dz
    lps[:3, 3] = ipp
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _to_volume(frames: list[np.ndarray]) -> np.ndarray:
    """List of (rows, cols[, 3]) -> (cols, rows, slices[, 3])."""
    vol = np.stack(frames, axis=0)  # (k, j, i[, 3])
    return np.ascontiguousarray(np.moveaxis(vol, (0, 1, 2), (2, 1, 0)))


def _fallback_affine(ds) -> np.ndarray:
    ps = _floats(ds, "PixelSpacing", 2)
    ps = ps if ps is not None and np.all(ps > 0) else np.array([1.0, 1.0])
    th = _floats(ds, "SliceThickness", 1)
    dz = float(th[0]) if th is not None and th[0] > 0 else 1.0
    # no patient geometry: treat rows as posterior, columns as the patient's left (an axial picture)
    return np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, dz, 0], [0, 0, 0, 1.0]]) + np.array(
        [[ps[1], 0, 0, 0], [0, ps[0], 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    ) @ np.diag([-1.0, -1.0, 1, 1])


def _single(ds, path: Path, warnings: list[str]) -> Study:
    arr = _pixels(ds, path.name)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if nframes > 1:
        frames = [arr[i] for i in range(arr.shape[0])]
    else:
        frames = [arr]
    if spp == 1 and frames[0].ndim != 2:
        raise StudyError(f"{path.name}: unexpected pixel array shape {arr.shape}")
    data = _to_volume([_monochrome1(f, ds) for f in frames])
    data = _rescale(data, ds) if spp == 1 else data.astype(np.float32)
    geo = _geometry(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if nframes > 1 and per_frame is not None:
        geo, data = _enhanced_geometry(ds, data, per_frame, warnings, path.name) or (geo, data)
    if geo is None:
        warnings.append(f"{path.name}: no patient position/orientation; assuming axial slices")
        affine = _fallback_affine(ds)
    else:
        rowcos, colcos, ps, ipp = geo[:4]
        normal = np.cross(rowcos, colcos)
        dz = geo[4] if len(geo) > 4 else None
        if dz is None:
            sp = _floats(ds, "SpacingBetweenSlices", 1)
            th = _floats(ds, "SliceThickness", 1)
            dz = float(sp[0]) if sp is not None and sp[0] > 0 else float(th[0]) if th is not None and th[0] > 0 else 1.0
        affine = _affine(rowcos, colcos, ps, ipp, normal, dz)
    meta = _meta(ds, 1)
    meta["dicom_files"] = [str(path)]
    return make_study(data, affine, _modality(ds), str(path), warnings, meta=meta)


def _enhanced_geometry(ds, data, per_frame, warnings, name):
    """Enhanced multi-frame: per-frame positions and shared orientation; frames sorted along the normal."""
    try:
        shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
        po = shared.PlaneOrientationSequence[0] if shared is not None and "PlaneOrientationSequence" in shared else None
        pm = shared.PixelMeasuresSequence[0] if shared is not None and "PixelMeasuresSequence" in shared else None
        if po is None:
            po = per_frame[0].PlaneOrientationSequence[0]
        if pm is None:
            pm = per_frame[0].PixelMeasuresSequence[0]
        iop = np.array([float(v) for v in po.ImageOrientationPatient])
        ps = np.array([float(v) for v in pm.PixelSpacing])
        pos = np.array([[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in per_frame])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    if pos.shape != (data.shape[2], 3):
        return None
    rowcos, colcos = iop[:3], iop[3:]
    normal = np.cross(rowcos, colcos)
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    data = data[:, :, order]
    steps = np.diff(proj[order])
    dz = float(np.median(steps)) if steps.size else 1.0
    if dz <= 0:
        dz = 1.0
    return (rowcos, colcos, ps, pos[order[0]], dz), data


def _meta(ds, n_slices: int) -> dict:
    meta = {"format": "DICOM", "slices": n_slices}
    for key in ("SeriesDescription", "Modality", "WindowCenter", "WindowWidth", "SeriesInstanceUID") + SEQUENCE_TAGS:
        v = ds.get(key)
        if v is not None:
            try:
                meta[key] = (
                    float(v[0] if hasattr(v, "__len__") and not isinstance(v, str) else v)
                    if key.startswith("Window") or key in NUMERIC_TAGS
                    else (
                        " ".join(str(x) for x in v)
                        if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue"
                        else str(v)
                    )
                )
            except (TypeError, ValueError):
                pass
    return meta


#: acquisition facts kept in ``Study.meta`` for the domain check (app/data/domain.py): contrast, enhancement, slices
SEQUENCE_TAGS = (
    "ProtocolName",
    "SequenceName",
    "ScanningSequence",
    "SequenceVariant",
    "ContrastBolusAgent",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "SliceThickness",
    "ImageType",
)
NUMERIC_TAGS = ("RepetitionTime", "EchoTime", "InversionTime", "SliceThickness")


def _series(paths: list[Path], warnings: list[str], label: str) -> Study:
    """A classic series: one 2D image per file, sorted along the slice normal."""
    items = []
    for p in paths:
        ds = _read(p, header_only=False)
        items.append((p, ds))
    ref = items[0][1]
    geo = _geometry(ref)
    if len(items) == 1:
        return _single(ref, items[0][0], warnings)
    if geo is None:
        warnings.append(f"{label}: slices have no ImagePositionPatient/Orientation; ordered by InstanceNumber")
        items.sort(key=lambda t: int(t[1].get("InstanceNumber", 0) or 0))
        affine = _fallback_affine(ref)
        normal = None
    else:
        rowcos, colcos, ps, _ = geo
        normal = np.cross(rowcos, colcos)
        proj = []
        for p, ds in items:
            g = _geometry(ds)
            if g is None:
                raise StudyError(f"{p.name}: slice has no position/orientation while the rest of the series has")
            proj.append(float(g[3] @ normal))
        order = np.argsort(proj, kind="stable")
        items = [items[i] for i in order]
        proj = np.array(proj)[order]
        steps = np.diff(proj)
        if np.any(np.abs(steps) < 1e-4):
            warnings.append(f"{label}: {int(np.sum(np.abs(steps) < 1e-4))} duplicate slice positions")
        dz = float(np.median(steps)) if steps.size else 1.0
        if dz <= 1e-4:
            raise StudyError(f"{label}: all slices share one position; cannot build a volume")
        if steps.size and np.max(np.abs(steps - dz)) > 0.1 * dz + 0.01:
            warnings.append(
                f"{label}: uneven slice spacing ({steps.min():.2f}-{steps.max():.2f} mm); using {dz:.2f} mm"
            )
        affine = _affine(rowcos, colcos, ps, geo[3] + 0.0, normal, dz)
        affine[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ _geometry(items[0][1])[3]
    frames = []
    shape = None
    for p, ds in items:
        arr = _pixels(ds, p.name)
        if arr.ndim != 2:
            raise StudyError(f"{p.name}: expected one 2D image per file in a series, got shape {arr.shape}")
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise StudyError(f"{label}: slices differ in size ({shape} vs {arr.shape})")
        frames.append(_rescale(_monochrome1(arr, ds), ds))
    data = _to_volume(frames)
    meta = _meta(ref, len(frames))
    meta["dicom_files"] = [str(p) for p, _ in items]  # slice k of the original grid (app/io/seg.py uses it)
    return make_study(data, affine, _modality(ref), label, warnings, meta=meta)


def series_header(p: Path, skipped: Counter):
    """The header (:data:`SERIES_TAGS`) of a DICOM image file, as a folder scan groups it -- the viewer's and
    ``detect``'s (:func:`load_dicom`) and ``batch``'s (app.batch.inputs); None for any other file. Objects that hold
    pixels but are not images to analyse (:func:`not_an_image`) are counted in ``skipped`` by what they are."""
    import pydicom

    try:
        marker = is_dicom_file(p)
        if not marker and p.suffix.lower() not in (".dcm", ".dicom", ".ima", ""):
            return None
        ds = pydicom.dcmread(str(p), stop_before_pixels=True, force=not marker, specific_tags=SERIES_TAGS)
    except Exception:  # noqa: BLE001 - anything unreadable is not part of a series
        return None
    if "Rows" not in ds or "Columns" not in ds:
        return None
    if (what := not_an_image(ds)) is not None:
        skipped[what] += 1
        return None
    return ds


def series_uid(ds, p: Path) -> str:
    """The series a scanned file belongs to (its folder's where it names none)."""
    return str(ds.get("SeriesInstanceUID", "") or f"no-uid:{p.parent}")


def _scan_folder(folder: Path, skipped: Counter) -> dict[str, list[Path]]:
    """The folder's DICOM images grouped by series; ``skipped`` counts the objects left out by what they are."""
    groups: dict[str, list[Path]] = defaultdict(list)
    n = 0
    for root, _dirs, files in os.walk(folder):
        for f in sorted(files):
            p = Path(root) / f
            n += 1
            if n > MAX_FILES:
                raise StudyError(f"{folder}: more than {MAX_FILES} files; point to one series folder")
            if (ds := series_header(p, skipped)) is not None:
                groups[series_uid(ds, p)].append(p)
    return groups


def skipped_text(skipped: dict[str, int]) -> str:
    """What a folder scan left out, ``{"a DICOM SEG (segmentation)": 1, ...}``, as the end of a message."""
    return "left out: " + "; ".join(f"{n} x {what}" for what, n in sorted(skipped.items()))


#: what pydicom raises on a damaged header: it parses elements lazily, so any attribute access can fail
HEADER_ERRORS = (
    NotImplementedError, ValueError, TypeError, KeyError, AttributeError, IndexError, LookupError, OverflowError,
    struct.error,
)  # fmt: skip


def load_dicom(path: str | os.PathLike) -> Study:
    """A DICOM file or folder -> Study (see the module docstring)."""
    try:
        return _load_dicom(Path(path))
    except StudyError:
        raise
    except HEADER_ERRORS as exc:
        raise StudyError(f"{Path(path).name}: damaged DICOM header ({type(exc).__name__}: {one_line(exc)})") from None


def _load_dicom(path: Path) -> Study:
    warnings: list[str] = []
    if path.is_file():
        ds = _read(path, header_only=False)
        if (what := not_an_image(ds)) is not None:
            raise StudyError(
                f"{path.name}: {what}, not an image to analyse: open the image series it was made from"
                + (" (a SEG then loads as its mask: File > Load segmentation)" if "SEG" in what else "")
            )
        if "Rows" not in ds or "Columns" not in ds or ("PixelData" not in ds and "FloatPixelData" not in ds):
            raise StudyError(f"{path.name}: DICOM file has no image (no pixel data)")
        return _single(ds, path, warnings)
    skipped: Counter = Counter()
    groups = _scan_folder(path, skipped)
    if not groups:
        others = sorted(
            p.name for p in path.iterdir() if p.is_file() and p.name.lower().endswith((".nii", ".nii.gz", ".mgz"))
        )
        hint = f" (it holds {len(others)} NIfTI/MGZ file(s), e.g. {others[0]}: open a file)" if others else ""
        if skipped:
            hint += f" ({skipped_text(skipped)}: not images to analyse)"
        raise StudyError(f"{path}: no DICOM images in this folder{hint}")
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    uid, files = ranked[0]
    if len(ranked) > 1:
        others = "; ".join(f"{len(f)} file(s) in {_describe(f[0])}" for _, f in ranked[1:6])
        warnings.append(
            f"{path.name}: {len(ranked)} series found; reading the largest ({len(files)} files). Others: {others}"
        )
    if len(files) == 1:
        ds = _read(files[0], header_only=False)
        return _single(ds, files[0], warnings)
    return _series(files, warnings, str(path))


def _describe(p: Path) -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(str(p), stop_before_pixels=True, force=True)
        return f"series {ds.get('SeriesNumber', '?')} '{ds.get('SeriesDescription', '')}'"
    except Exception:  # noqa: BLE001
        return p.name


def load_dicom_series(files: list[str | os.PathLike], label: str) -> Study:
    """One series given as its files (e.g. found by a batch scan of an archive) -> Study, sorted along the slice
    normal as :func:`load_dicom` does for a folder."""
    paths = [Path(f) for f in files]
    if not paths:
        raise StudyError(f"{label}: no files in the series")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise StudyError(f"{label}: {len(missing)} file(s) of the series are missing, e.g. {missing[0]}")
    try:
        if len(paths) == 1:
            return _single(_read(paths[0], header_only=False), paths[0], [])
        return _series(sorted(paths), [], label)
    except StudyError:
        raise
    except HEADER_ERRORS as exc:
        raise StudyError(f"{label}: damaged DICOM header ({type(exc).__name__}: {one_line(exc)})") from None
