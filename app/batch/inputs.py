"""What ``batch INPUTS...`` means: each input is expanded into studies (:class:`StudyRef`).

- a NIfTI/MGZ file (``.nii``, ``.nii.gz``, ``.mgz``), a DICOM file, or a PNG/JPEG/TIFF picture: one study;
- a folder: searched recursively; every NIfTI/MGZ file is a study, and DICOM files are grouped by
  SeriesInstanceUID across the whole tree, one study per series (an archive laid out patient/study/series, or
  several series in one folder, both work). Other files are ignored;
- a glob (``'archive/*/T1.nii.gz'``, ``**`` allowed): each match as above;
- a list: a ``.txt``/``.lst`` file with one input per line (``#`` starts a comment) or a ``.csv`` file with a
  ``path`` column (else the first column) and an optional ``id`` column; relative paths are relative to the list.

Study ids name the output folders (``DIR/<study-id>/``): the file name without its extension, or for a DICOM series
``<folder>_s<SeriesNumber>``; characters outside ``[A-Za-z0-9._-]`` become ``_``; ids that would collide get a
short hash of their source appended, so the same inputs always give the same ids (a rerun finds its outputs).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import OptionError

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mgz")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
LIST_SUFFIXES = (".txt", ".lst", ".csv")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class StudyRef:
    """One study to process: its id, how to read it, and the files it consists of."""

    id: str
    kind: str  # "file" (anything app.io.load_study reads) or "dicom-series" (files of one series)
    source: str  # the file, or the folder the series was found in
    files: tuple[str, ...] = field(default=())  # every file the study is read from
    series_uid: str = ""
    description: str = ""
    study_uid: str = ""  # set for series retrieved from a PACS (batch --server --query)
    error: str = ""  # set when the study could not even be fetched (a PACS series that failed to arrive)

    def fingerprint(self) -> str:
        """A digest of the study's files' paths, sizes and modification times: changes when an input changes."""
        h = hashlib.sha1()
        for f in sorted(self.files):
            try:
                st = os.stat(f)
                h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{f}|missing\n".encode())
        return h.hexdigest()

    def to_dict(self) -> dict:
        d = {"id": self.id, "kind": self.kind, "source": self.source, "n_files": len(self.files)}
        if self.kind == "file":
            d["files"] = list(self.files)
        if self.series_uid:
            d["series_uid"] = self.series_uid
        if self.description:
            d["description"] = self.description
        if self.study_uid:
            d["study_uid"] = self.study_uid
        if self.error:
            d["error"] = self.error
        return d


def _has_suffix(p: Path, suffixes) -> bool:
    return p.name.lower().endswith(suffixes)


def _stem(p: Path) -> str:
    name = p.name
    for s in (".nii.gz", ".nii", ".mgz", ".dcm", ".dicom", ".ima", *PICTURE_SUFFIXES):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def safe_id(text: str) -> str:
    s = _SAFE.sub("_", text).strip("._-")
    return s[:80] or "study"


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _read_list(path: Path) -> list[tuple[str, str | None]]:
    """(input, id or None) entries of a .txt/.lst/.csv list."""
    base = path.parent
    out: list[tuple[str, str | None]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"{path}: cannot read the list ({exc})") from None

    def resolve(v: str) -> str:
        v = os.path.expanduser(v.strip())
        return v if os.path.isabs(v) else str(base / v)

    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        rows = [r for r in rows if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
        if not rows:
            return []
        header = [c.strip().lower() for c in rows[0]]
        if "path" in header or "study" in header:
            col = header.index("path") if "path" in header else header.index("study")
            idc = header.index("id") if "id" in header else None
            rows = rows[1:]
        else:
            col, idc = 0, None
        for r in rows:
            if col < len(r) and r[col].strip():
                out.append((resolve(r[col]), r[idc].strip() if idc is not None and idc < len(r) else None))
        return out
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            out.append((resolve(line), None))
    return out


def _scan_folder(folder: Path, found: list[dict], skipped: Counter) -> None:
    """NIfTI/MGZ files and DICOM image series under ``folder``, recursively. Left out, and counted in ``skipped``:
    DICOM objects that are not images (:func:`app.io.dicom.series_header`), and batch output folders (a rerun's
    --out inside the archive: its masks are results, not studies)."""
    from app.io.dicom import series_header, series_uid
    from app.viewer.worklist import RESULT, is_batch_output, is_batch_result

    series: dict[str, list[Path]] = defaultdict(list)
    info: dict[str, tuple[str, str, Path]] = {}
    for root, dirs, files in os.walk(folder):
        if is_batch_output(root) or (RESULT in files and is_batch_result(Path(root) / RESULT)):
            skipped["a batch output folder"] += 1
            dirs[:] = []
            continue
        dirs.sort()
        for f in sorted(files):
            p = Path(root) / f
            if f.startswith("."):
                continue
            if _has_suffix(p, NIFTI_SUFFIXES):
                found.append({"kind": "file", "source": str(p), "files": (str(p),), "name": _stem(p)})
                continue
            if _has_suffix(p, PICTURE_SUFFIXES + LIST_SUFFIXES + (".json", ".html", ".md", ".py")):
                continue
            ds = series_header(p, skipped)
            if ds is None:
                continue
            uid = series_uid(ds, p)
            series[uid].append(p)
            if uid not in info:
                info[uid] = (str(ds.get("SeriesNumber", "") or ""), str(ds.get("SeriesDescription", "") or ""), p)
    for uid, paths in series.items():
        number, desc, first = info[uid]
        parents = {q.parent for q in paths}
        common = Path(os.path.commonpath([str(q) for q in parents])) if parents else first.parent
        name = common.name or folder.name
        if number:
            name = f"{name}_s{number}"
        found.append(
            {
                "kind": "dicom-series",
                "source": str(common),
                "files": tuple(sorted(str(q) for q in paths)),
                "name": name,
                "uid": "" if uid.startswith("no-uid:") else uid,
                "desc": desc,
            }
        )


def _expand_one(item: str, found: list[dict], given_id: str | None, depth: int = 0) -> None:
    if _is_glob(item):
        matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
        if not matches:
            raise OptionError(f"{item}: the pattern matches nothing")
        for m in matches:
            _expand_one(m, found, None, depth)
        return
    p = Path(os.path.expanduser(item))
    if not p.exists():
        raise OptionError(f"{item}: no such file or folder")
    if p.is_dir():
        before, skipped = len(found), Counter()
        _scan_folder(p, found, skipped)
        if len(found) == before:
            from app.io.dicom import skipped_text

            only = f" ({skipped_text(skipped)}: not studies to analyse)" if skipped else ""
            raise OptionError(f"{p}: no NIfTI/MGZ files or DICOM series in this folder{only}")
        return
    if _has_suffix(p, LIST_SUFFIXES):
        if depth > 3:
            raise OptionError(f"{p}: lists nested too deep")
        entries = _read_list(p)
        if not entries:
            raise OptionError(f"{p}: the list names no studies")
        for entry, eid in entries:
            _expand_one(entry, found, eid, depth + 1)
        return
    rec = {"kind": "file", "source": str(p), "files": (str(p),), "name": given_id or _stem(p)}
    if given_id:
        rec["given"] = True
    found.append(rec)


def expand_inputs(inputs: list[str]) -> list[StudyRef]:
    """Inputs as given on the command line -> studies with unique, stable ids, in input order (duplicates, the
    same file reached twice, are dropped)."""
    if not inputs:
        raise OptionError("no inputs: name study files, folders, globs or a list")
    found: list[dict] = []
    for item in inputs:
        _expand_one(str(item), found, None)
    return refs_from_records(found)


def refs_from_records(found: list[dict]) -> list[StudyRef]:
    """Found studies (dicts: ``kind``, ``source``, ``files``, ``name``; optional ``uid``, ``desc``, ``study_uid``,
    ``given``, ``error``) -> StudyRefs with unique, stable ids, in order; the same files reached twice are dropped.
    Used for the inputs above and for the series a PACS query retrieved."""
    seen: set[tuple[str, ...]] = set()
    unique = []
    for rec in found:
        key = tuple(os.path.realpath(f) for f in rec["files"]) or ("no files", rec["source"], rec.get("uid", ""))
        if key in seen:
            continue
        seen.add(key)
        unique.append(rec)
    base = [safe_id(r["name"]) for r in unique]
    counts: dict[str, int] = defaultdict(int)
    for b in base:
        counts[b] += 1
    # colliding names (archive/p001/T1.nii.gz, archive/p002/T1.nii.gz): prefix the parent folder's name first
    for i, rec in enumerate(unique):
        if counts[base[i]] > 1 and rec["kind"] == "file" and not rec.get("given"):
            base[i] = safe_id(f"{Path(rec['source']).parent.name}_{rec['name']}")
    counts = defaultdict(int)
    for b in base:
        counts[b] += 1
    refs = []
    for rec, b in zip(unique, base, strict=True):
        sid = b
        if counts[b] > 1:
            digest = hashlib.sha1((rec["source"] + "|" + rec.get("uid", "")).encode()).hexdigest()[:8]
            sid = f"{b}-{digest}"
        refs.append(
            StudyRef(
                id=sid,
                kind=rec["kind"],
                source=rec["source"],
                files=tuple(os.path.abspath(f) for f in rec["files"]),
                series_uid=rec.get("uid", ""),
                description=rec.get("desc", ""),
                study_uid=rec.get("study_uid", ""),
                error=rec.get("error", ""),
            )
        )
    return refs
