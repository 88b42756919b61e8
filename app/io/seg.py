"""DICOM out: a detection mask as a **DICOM Segmentation** and the difference map as a **DICOM Parametric Map**,
both written with highdicom over the source series, and a SEG read back onto its source study.

- Only a study read from DICOM can get DICOM output: the SEG references the source series' SOP instances (one
  frame per source image, empty frames omitted), its frame of reference and its patient/study identifiers,
  which NIfTI or PNG inputs do not have (:func:`require_dicom` says so in one line).
- Frame k of the output belongs to the source file that is slice k of the study's *original* grid
  (``study.meta["dicom_files"]``, in the reader's order along the slice normal), so shuffled file names,
  reversed slice order and oblique planes all land on the right image.
- One segment, "MatchGen anomaly": category *Morphologically abnormal structure* (SCT 49755003), type *Lesion*
  (SCT 52988006), algorithm type AUTOMATIC, with the algorithm identification (model name, family, card hash,
  eps, tau, version) in the segment and in the series.
- Files are written atomically (temporary file in the same folder, then rename).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import StudyError
from app.io.study import Study, one_line

SEGMENT_LABEL = "MatchGen anomaly"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
PM_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.30"
#: series numbers of what we write (high, so they sort after the scanner's series)
SEG_SERIES_NUMBER = 9901
PM_SERIES_NUMBER = 9902


@dataclass(frozen=True)
class AlgorithmInfo:
    """What produced a result, as written in the SEG's algorithm identification."""

    model: str  # the model's name (card stem)
    family: str  # ae-l1, vae, dae, ...
    card_sha256: str  # hash of the model card file ("" if unknown)
    eps: float
    tau: float
    version: str  # MatchGen Viewer's version
    base_only: bool = False

    @classmethod
    def for_checkpoint(
        cls, stem: str | os.PathLike, family: str, eps: float, tau: float, base_only: bool = False
    ) -> AlgorithmInfo:
        """The identification of the checkpoint ``stem`` (no suffix; its card's hash) run with eps and tau
        (``detect`` and ``batch`` both describe their SEGs this way)."""
        from app import __version__

        stem = Path(stem)
        return cls(
            model=stem.name,
            family=str(family),
            card_sha256=card_sha256(stem.with_suffix(".json")),
            eps=float(eps),
            tau=float(tau),
            version=__version__,
            base_only=bool(base_only),
        )

    @property
    def name(self) -> str:
        return f"MatchGen {self.model}" + (" (base model)" if self.base_only else "")

    def parameters(self) -> dict[str, str]:
        return {
            "model": self.model,
            "family": self.family,
            "card_sha256": self.card_sha256 or "unknown",
            "eps": f"{self.eps:g}",
            "tau": f"{self.tau:g}",
            "base_only": "true" if self.base_only else "false",
        }


def card_sha256(card_path: str | os.PathLike | None) -> str:
    """SHA-256 of a model card file (hex), or "" if there is none."""
    if card_path is None:
        return ""
    try:
        return hashlib.sha256(Path(card_path).read_bytes()).hexdigest()
    except OSError:
        return ""


def is_dicom_study(study: Study) -> bool:
    return bool(study.meta.get("dicom_files")) and study.meta.get("format") == "DICOM"


def require_dicom(study: Study, what: str = "DICOM output") -> list[str]:
    """The study's source files in original-grid slice order, or a one-line StudyError for other inputs."""
    files = study.meta.get("dicom_files") if study.meta.get("format") == "DICOM" else None
    if not files:
        kind = study.meta.get("format") or Path(study.source).suffix or "not DICOM"
        raise StudyError(
            f"{what} needs a study read from DICOM; {Path(study.source).name} is {kind}: "
            "write the mask as .nii.gz instead"
        )
    if len(files) != study.original_shape[2]:
        raise StudyError(
            f"{what}: {Path(files[0]).name} is a multi-frame image; DICOM output supports series of "
            "single-frame images only"
        )
    return list(files)


def _sources(study: Study, what: str):
    import pydicom

    files = require_dicom(study, what)
    out = []
    for f in files:
        try:
            out.append(pydicom.dcmread(f, stop_before_pixels=True))
        except Exception as exc:  # noqa: BLE001 - a source removed or damaged since the study was read
            raise StudyError(f"{what}: source image {Path(f).name} cannot be read again ({one_line(exc)})") from None
    return out


def _frames(study: Study, volume: np.ndarray) -> np.ndarray:
    """A canonical-grid (X, Y, Z) array -> (frames, rows, columns), frame k = source file k."""
    orig = study.to_original(np.asarray(volume))
    return np.ascontiguousarray(np.transpose(orig, (2, 1, 0)))


def _atomic_save(ds, path: Path) -> Path:
    from app.atomic import atomic_write
    from app.errors import OutputError

    try:
        return atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True), mkdir=False)
    except OutputError as exc:
        raise StudyError(str(exc)) from None


def _algorithm(algo: AlgorithmInfo):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=algo.name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=algo.version[:64],
        source="MatchGen Viewer",
        parameters=algo.parameters(),
    )


def _equipment(algo: AlgorithmInfo) -> dict:
    return {
        "manufacturer": "MatchGen Viewer",
        "manufacturer_model_name": f"MatchGen {algo.family}"[:64],
        "software_versions": algo.version,
        "device_serial_number": (algo.card_sha256 or "unknown")[:64],
    }


def build_seg(study: Study, mask: np.ndarray, algo: AlgorithmInfo, series_number: int = SEG_SERIES_NUMBER):
    """The highdicom Segmentation of a canonical-grid boolean mask (not yet written)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = _sources(study, "DICOM SEG output")
    frames = _frames(study, np.asarray(mask).astype(bool)).astype(np.uint8)
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(algo),
        tracking_uid=hd.UID(),
        tracking_id=SEGMENT_LABEL,
    )
    try:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            series_description=f"{SEGMENT_LABEL} ({algo.model}, eps={algo.eps:g}, tau={algo.tau:g})"[:64],
            content_label="MATCHGEN",
            content_description=f"{algo.name}, eps={algo.eps:g}, tau={algo.tau:g}"[:64],
            content_creator_name="MatchGen^Viewer",
            **_equipment(algo),
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise StudyError(f"cannot build a DICOM SEG over this series ({one_line(exc)})") from None


def write_seg(
    study: Study, mask: np.ndarray, path: str | os.PathLike, algo: AlgorithmInfo, series_number: int = SEG_SERIES_NUMBER
) -> Path:
    """Write the mask as a DICOM Segmentation referencing the study's source series (atomically)."""
    path = Path(path)
    if path.suffix.lower() != ".dcm":
        raise StudyError(f"{path}: a DICOM SEG is written to a .dcm file")
    return _atomic_save(build_seg(study, mask, algo, series_number), path)


def write_parametric_map(
    study: Study, dmap: np.ndarray, path: str | os.PathLike, algo: AlgorithmInfo, series_number: int = PM_SERIES_NUMBER
) -> Path:
    """Write the difference map (canonical grid, values in [0, 1]) as a DICOM Parametric Map (float pixels)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = Path(path)
    sources = _sources(study, "DICOM Parametric Map output")
    frames = _frames(study, np.asarray(dmap, dtype=np.float32)).astype(np.float32)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="MATCHGEN_D",
        lut_explanation="MatchGen difference |x - s| (normalised intensity)",
        unit=codes.UCUM.NoUnits,
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
    )
    try:
        pm = hd.pm.ParametricMap(
            source_images=sources,
            pixel_array=frames,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
            series_description=f"MatchGen difference map ({algo.model})"[:64],
            content_label="MATCHGEN_D",
            content_description=f"{algo.name}, eps={algo.eps:g}"[:64],
            content_creator_name="MatchGen^Viewer",
            image_flavor=hd.pm.ImageFlavorValues.VOLUME if len(sources) > 1 else None,
            derived_pixel_contrast=hd.pm.DerivedPixelContrastValues.NONE,
            **_equipment(algo),
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise StudyError(f"cannot build a DICOM Parametric Map over this series ({one_line(exc)})") from None
    pm.Laterality = ""  # type 2C in the General Series module; unknown (dciodvfy asks for it)
    return _atomic_save(pm, path)


def is_seg_file(path: str | os.PathLike) -> bool:
    """True for a DICOM file whose SOP class is Segmentation Storage."""
    import pydicom

    p = Path(path)
    if not p.is_file():
        return False
    try:
        ds = pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS


def read_seg(path: str | os.PathLike, study: Study) -> np.ndarray:
    """A DICOM SEG -> boolean mask on ``study``'s canonical grid (the union of its segments).

    The SEG must reference the study's source images (as every SEG writer does: highdicom, 3D Slicer, OHIF);
    frames it omits are empty."""
    import highdicom as hd
    import pydicom

    path = Path(path)
    files = require_dicom(study, "Loading a DICOM SEG")
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # noqa: BLE001 - pydicom/highdicom raise many types on a bad file
        raise StudyError(f"{path.name}: not a readable DICOM Segmentation ({one_line(exc)})") from None
    uids = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            uids.append(str(ds.SOPInstanceUID))
        except Exception as exc:  # noqa: BLE001
            raise StudyError(f"source image {Path(f).name} cannot be read again ({one_line(exc)})") from None
    referenced = {sop for _study, _series, sop in seg.get_source_image_uids()}
    if not referenced & set(uids):
        series = sorted({s for _st, s, _sop in seg.get_source_image_uids()})
        raise StudyError(
            f"{path.name} segments another series ({', '.join(series[:2]) or 'none named'}), "
            "not the open study's images"
        )
    try:
        px = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    except Exception as exc:  # noqa: BLE001
        raise StudyError(f"{path.name}: its frames do not fit the open series ({one_line(exc)})") from None
    px = np.asarray(px)
    if px.ndim == 4:
        px = px.any(axis=3)
    frames = px > 0  # (frames, rows, cols)
    orig = np.transpose(frames, (2, 1, 0))
    if tuple(orig.shape) != tuple(study.original_shape):
        raise StudyError(f"{path.name}: frames of {frames.shape[1:]} pixels do not fit the study's images")
    return study.from_original(orig)
