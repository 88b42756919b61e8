"""What a PACS query asks and answers: plain data, the same for DICOMweb and DIMSE."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.io.dicom import NON_IMAGE_MODALITIES
from app.pacs.errors import PacsError

#: modalities whose series hold images we can analyse (SR, SEG, PR, KO, RTSTRUCT, ... do not)
IMAGE_MODALITIES = {"MR", "CT", "PT", "OT", "CR", "DX", "MG", "US", "XA", "NM", "OCT", "OP", "SC"}

_DATE = re.compile(r"^\d{8}$")


def date_range(date_from: str | None, date_to: str | None) -> str | None:
    """DICOM date range 'YYYYMMDD-YYYYMMDD' (either side open) from two dates (YYYYMMDD or YYYY-MM-DD)."""
    parts = []
    for name, d in (("--date-from", date_from), ("--date-to", date_to)):
        d = (d or "").replace("-", "").strip()
        if d and not _DATE.match(d):
            raise PacsError(f"{name} {d!r}: use YYYYMMDD or YYYY-MM-DD")
        parts.append(d)
    if not any(parts):
        return None
    if parts[0] and parts[1] and parts[0] > parts[1]:
        raise PacsError(f"study date range {parts[0]}-{parts[1]} is empty (from is after to)")
    if parts[0] == parts[1]:
        return parts[0]
    return f"{parts[0]}-{parts[1]}"


@dataclass(frozen=True)
class Query:
    """Study-level search keys; empty means 'any'. Names accept DICOM wildcards (``DOE*``)."""

    patient_name: str = ""
    patient_id: str = ""
    study_date: str = ""  # YYYYMMDD or a range YYYYMMDD-YYYYMMDD
    modality: str = ""  # e.g. MR (matches ModalitiesInStudy)
    accession: str = ""
    study_uid: str = ""

    def filters(self) -> dict[str, str]:
        """DICOM keyword -> value, only the keys that are set."""
        keys = {
            "PatientName": self.patient_name,
            "PatientID": self.patient_id,
            "StudyDate": self.study_date,
            "ModalitiesInStudy": self.modality.upper(),
            "AccessionNumber": self.accession,
            "StudyInstanceUID": self.study_uid,
        }
        return {k: v for k, v in keys.items() if v}


@dataclass(frozen=True)
class StudyInfo:
    study_uid: str
    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    study_date: str = ""
    modalities: str = ""  # backslash-free, comma-separated
    description: str = ""
    accession: str = ""
    n_series: int | None = None
    n_instances: int | None = None

    def row(self) -> list[str]:
        return [
            self.patient_name,
            self.patient_id,
            self.birth_date,
            self.study_date,
            self.modalities,
            self.description,
            "" if self.n_series is None else str(self.n_series),
            "" if self.n_instances is None else str(self.n_instances),
            self.accession,
            self.study_uid,
        ]


STUDY_COLUMNS = [
    "Patient",
    "Patient ID",
    "Birth date",
    "Study date",
    "Modality",
    "Description",
    "Series",
    "Images",
    "Accession",
    "Study UID",
]


@dataclass(frozen=True)
class SeriesInfo:
    study_uid: str
    series_uid: str
    modality: str = ""
    description: str = ""
    number: int | None = None
    n_instances: int | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def is_image(self) -> bool:
        m = self.modality.upper()
        return m not in NON_IMAGE_MODALITIES

    def row(self) -> list[str]:
        return [
            "" if self.number is None else str(self.number),
            self.modality,
            self.description,
            "" if self.n_instances is None else str(self.n_instances),
            self.series_uid,
        ]


SERIES_COLUMNS = ["Number", "Modality", "Description", "Images", "Series UID"]


def pick_image_series(series: list[SeriesInfo], series_uid: str | None, study_uid: str) -> SeriesInfo:
    """The series to analyse: ``series_uid`` if given (it must hold images), else the study's only image series.
    Several image series and no choice, a non-image series, or none at all: a PacsError that lists them."""
    if series_uid:
        for s in series:
            if s.series_uid == series_uid:
                if not s.is_image:
                    raise PacsError(
                        f"series {series_uid} is a {s.modality or 'non-image'} series "
                        f"('{s.description}'), not images: pick an image series of study {study_uid}"
                    )
                return s
        raise PacsError(f"study {study_uid} has no series {series_uid} on this server")
    images = [s for s in series if s.is_image]
    if not images:
        kinds = ", ".join(sorted({s.modality or "?" for s in series})) or "nothing"
        raise PacsError(f"study {study_uid} has no image series (it holds: {kinds})")
    if len(images) > 1:
        listing = "; ".join(
            f"{s.series_uid} ({s.modality} '{s.description}', {s.n_instances if s.n_instances is not None else '?'}"
            " images)"
            for s in images[:6]
        )
        raise PacsError(f"study {study_uid} has {len(images)} image series; pick one with --series-uid: {listing}")
    return images[0]


def format_table(columns: list[str], rows: list[list[str]]) -> str:
    """A plain-text table (column widths from the content)."""
    widths = [len(c) for c in columns]
    for r in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, r, strict=False)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=False)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip())
    return "\n".join(lines)
