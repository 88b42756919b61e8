"""The local retrieval cache: what was fetched from a PACS, in a folder the user can see and clear.

Layout under the cache root (``MATCHGEN_PACS_CACHE``, else ``$XDG_CACHE_HOME/matchgen/pacs``, else
``~/.cache/matchgen/pacs``)::

    studies/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm    complete series only
    incoming/<random>/<StudyInstanceUID>/<SeriesInstanceUID>/...           a retrieval in progress

Each instance is written to a temporary name and renamed (atomic per instance) inside a private staging folder;
only when the whole retrieval has arrived is the staging study renamed into ``studies/`` (or, if the study is
already there, each series renamed in), so a reader never sees a half-retrieved series or study. A cancelled or
failed retrieval removes its staging folder; staging folders left by a crash are removed when older than a day.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.pacs.errors import PacsError

CACHE_ENV = "MATCHGEN_PACS_CACHE"
_UID = re.compile(r"^[0-9][0-9.]{0,63}$")
STALE_SECONDS = 24 * 3600
#: series renamed into an already published study one commit at a time (this process's concurrent retrievals)
_MERGE_LOCK = threading.Lock()


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def default_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "matchgen" / "pacs"


def safe_name(uid: str) -> str:
    """A UID as a file name (a UID is digits and dots; anything else is hashed, never used as a path)."""
    uid = str(uid or "").strip()
    if _UID.match(uid) and ".." not in uid:
        return uid
    return "x" + hashlib.sha1(uid.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class CachedSeries:
    study_uid: str
    series_uid: str
    path: Path
    files: int
    bytes: int


class RetrievalCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    @property
    def studies_dir(self) -> Path:
        return self.root / "studies"

    @property
    def incoming_dir(self) -> Path:
        return self.root / "incoming"

    def _ensure(self) -> None:
        try:
            self.studies_dir.mkdir(parents=True, exist_ok=True)
            self.incoming_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PacsError(f"cache folder {self.root}: cannot create it ({exc.strerror or exc})") from None
        self._drop_stale()

    def _drop_stale(self) -> None:
        now = time.time()
        for d in self.incoming_dir.iterdir() if self.incoming_dir.is_dir() else []:
            try:
                if now - d.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass

    def series_dir(self, study_uid: str, series_uid: str) -> Path | None:
        """The folder of a completely retrieved series, or None."""
        p = self.studies_dir / safe_name(study_uid) / safe_name(series_uid)
        return p if p.is_dir() else None

    def study_dir(self, study_uid: str) -> Path | None:
        p = self.studies_dir / safe_name(study_uid)
        return p if p.is_dir() else None

    def entries(self) -> list[CachedSeries]:
        out = []
        if not self.studies_dir.is_dir():
            return out
        for st in sorted(self.studies_dir.iterdir()):
            if not st.is_dir():
                continue
            for se in sorted(st.iterdir()):
                if se.is_dir():
                    files = [f for f in se.iterdir() if f.is_file()]
                    out.append(CachedSeries(st.name, se.name, se, len(files), sum(f.stat().st_size for f in files)))
        return out

    def size_bytes(self) -> int:
        total = 0
        if self.root.is_dir():
            for dirpath, _dirs, files in os.walk(self.root):
                for f in files:
                    try:
                        total += os.path.getsize(os.path.join(dirpath, f))
                    except OSError:
                        pass
        return total

    def clear(self) -> int:
        """Remove every cached study (and staging leftovers); returns the bytes freed."""
        size = self.size_bytes()
        for d in (self.studies_dir, self.incoming_dir):
            if d.is_dir():
                # rename first so a reader never sees a half-deleted series, then delete
                trash = self.root / f".trash-{uuid.uuid4().hex}"
                try:
                    os.replace(d, trash)
                except OSError as exc:
                    raise PacsError(f"cache folder {d}: cannot clear it ({exc.strerror or exc})") from None
                shutil.rmtree(trash, ignore_errors=True)
        return size

    def remove_study(self, study_uid: str) -> bool:
        d = self.study_dir(study_uid)
        if d is None:
            return False
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        os.replace(d, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def begin(self, study_uid: str) -> Staging:
        """A staging area for one retrieval of (part of) a study; commit() publishes it, abort() drops it."""
        self._ensure()
        try:
            path = Path(tempfile.mkdtemp(prefix="r-", dir=self.incoming_dir))
        except OSError as exc:
            raise PacsError(f"cache folder {self.incoming_dir}: cannot write ({exc.strerror or exc})") from None
        return Staging(self, study_uid, path)


class Staging:
    """Instances of one retrieval, written atomically one by one; nothing is visible until :meth:`commit`."""

    def __init__(self, cache: RetrievalCache, study_uid: str, path: Path):
        self.cache, self.study_uid, self.path = cache, study_uid, path
        self.study_path = path / safe_name(study_uid)
        self.count = 0
        self.bytes = 0
        self.done = False

    def _target(self, series_uid: str, sop_uid: str) -> Path:
        d = self.study_path / safe_name(series_uid)
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{safe_name(sop_uid)}.dcm"

    def _write(self, target: Path, write) -> Path:
        tmp = target.with_name(f".{target.name}.part")
        try:
            write(tmp)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PacsError(f"cache folder {self.cache.root}: cannot write ({exc.strerror or exc})") from None
        self.count += 1
        self.bytes += target.stat().st_size
        return target

    def write_bytes(self, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """One instance already encoded as a DICOM file (preamble, file meta, data set)."""
        return self._write(self._target(series_uid, sop_uid), lambda p: Path(p).write_bytes(data))

    def write_dataset(self, ds) -> Path:
        """One pydicom Dataset (with file meta) as a DICOM file."""
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        series_uid, sop_uid = str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        meta = getattr(ds, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            meta = meta if meta is not None else FileMetaDataset()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return self._write(self._target(series_uid, sop_uid), lambda p: ds.save_as(p, enforce_file_format=True))

    def series(self) -> list[str]:
        return sorted(p.name for p in self.study_path.iterdir()) if self.study_path.is_dir() else []

    def commit(self) -> Path:
        """Publish the retrieval: rename the study (or each of its series) into ``studies/``."""
        if self.done:
            raise RuntimeError("staging already committed or aborted")
        self.done = True
        final = self.cache.studies_dir / safe_name(self.study_uid)
        try:
            if not self.study_path.is_dir():
                return final
            if not final.exists():
                try:
                    os.replace(self.study_path, final)
                    return final
                except OSError:
                    if not final.is_dir():  # not another retrieval of the study publishing first: a real error
                        raise
            # the study is already there (or another thread just published it): rename each series in
            with _MERGE_LOCK:
                for se in self.study_path.iterdir():
                    dest = final / se.name
                    if dest.exists():
                        trash = self.cache.root / f".trash-{uuid.uuid4().hex}"
                        os.replace(dest, trash)
                        os.replace(se, dest)
                        shutil.rmtree(trash, ignore_errors=True)
                    else:
                        os.replace(se, dest)
        except OSError as exc:
            raise PacsError(f"cache folder {self.cache.root}: cannot publish the retrieval ({exc})") from None
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
        return final

    def abort(self) -> None:
        if not self.done:
            self.done = True
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.done:
            self.commit()
