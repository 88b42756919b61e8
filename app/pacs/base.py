"""What every PACS client offers, and the retrieve/send steps built on it (cache, progress, cancel)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from app.errors import Cancelled
from app.pacs.cache import RetrievalCache, Staging
from app.pacs.config import ServerConfig
from app.pacs.errors import PacsError
from app.pacs.model import Query, SeriesInfo, StudyInfo, pick_image_series

Progress = Callable[[int, "int | None"], None]
CancelFlag = Callable[[], bool]


def _never() -> bool:
    return False


class PacsClient:
    """Base of :class:`DicomWebClient` and :class:`DimseClient`."""

    def __init__(self, config: ServerConfig):
        self.config = config.validate()

    # -- to implement ------------------------------------------------------------------------------------------
    def echo(self) -> str:
        """Check the server answers (and accepts our credentials); returns a short description."""
        raise NotImplementedError

    def find_studies(self, query: Query, limit: int = 500) -> list[StudyInfo]:
        raise NotImplementedError

    def find_series(self, study_uid: str) -> list[SeriesInfo]:
        raise NotImplementedError

    def retrieve(
        self, staging: Staging, study_uid: str, series_uid: str, progress: Progress, cancel: CancelFlag, total
    ) -> int:
        """Write every instance of the series into ``staging`` (one at a time); returns how many."""
        raise NotImplementedError

    def store(self, paths: list[Path], progress: Progress, cancel: CancelFlag) -> int:
        """Send DICOM files; returns how many the server accepted (raises if it rejects any)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- shared ------------------------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _scrub(self, text) -> str:
        from app.pacs.errors import scrub

        return scrub(str(text), self.config.secrets())


def check_cancel(cancel: CancelFlag, what: str = "retrieval") -> None:
    if cancel():
        raise Cancelled(f"{what} cancelled; nothing partial was kept")


def retrieve_series(
    client: PacsClient,
    cache: RetrievalCache,
    study_uid: str,
    series_uid: str | None = None,
    progress: Progress | None = None,
    cancel: CancelFlag | None = None,
    refresh: bool = False,
) -> tuple[SeriesInfo, Path]:
    """Fetch one image series of a study into the cache (the only image series if ``series_uid`` is None);
    returns (its description, its complete folder). A series already cached with all its images is reused."""
    progress = progress or (lambda done, total: None)
    cancel = cancel or _never
    series = client.find_series(study_uid)
    if not series:
        raise PacsError(f"study {study_uid} is not on {client.config.label()} (or holds no series)")
    chosen = pick_image_series(series, series_uid, study_uid)
    hit = cache.series_dir(study_uid, chosen.series_uid)
    if hit is not None and not refresh:
        n = sum(1 for f in hit.iterdir() if f.suffix == ".dcm")
        if chosen.n_instances is None or n == chosen.n_instances:
            progress(n, n)
            return chosen, hit
    if chosen.n_instances == 0:
        raise PacsError(f"series {chosen.series_uid} of study {study_uid} holds no images")
    with cache.begin(study_uid) as staging:
        n = client.retrieve(staging, study_uid, chosen.series_uid, progress, cancel, chosen.n_instances)
        check_cancel(cancel)
        if n == 0:
            raise PacsError(f"series {chosen.series_uid}: the server sent no images")
        if chosen.n_instances is not None and n < chosen.n_instances:
            raise PacsError(
                f"series {chosen.series_uid}: the transfer broke off after {n} of {chosen.n_instances} images "
                "(timeout or connection closed); nothing was kept"
            )
    folder = cache.series_dir(study_uid, chosen.series_uid)
    if folder is None:
        raise PacsError(f"series {chosen.series_uid}: retrieved, but not found in the cache afterwards")
    return chosen, folder


def retrieve_study(
    client: PacsClient,
    cache: RetrievalCache,
    study_uid: str,
    progress: Progress | None = None,
    cancel: CancelFlag | None = None,
) -> Path:
    """Fetch every series of a study; the study appears in the cache only when all of it has arrived."""
    progress = progress or (lambda done, total: None)
    cancel = cancel or _never
    series = client.find_series(study_uid)
    if not series:
        raise PacsError(f"study {study_uid} is not on {client.config.label()} (or holds no series)")
    known = [s.n_instances for s in series]
    total = sum(known) if all(k is not None for k in known) else None
    with cache.begin(study_uid) as staging:
        done = 0
        for s in series:
            def sub(d, _t, base=done):
                progress(base + d, total)

            done += client.retrieve(staging, study_uid, s.series_uid, sub, cancel, s.n_instances)
            check_cancel(cancel)
        if done == 0:
            raise PacsError(f"study {study_uid}: the server sent no instances")
    return cache.study_dir(study_uid)


def dicom_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files and folders (recursively) -> the DICOM files among them (by the DICM marker)."""
    from app.io.dicom import is_dicom_file

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(f for f in sorted(p.rglob("*")) if f.is_file() and is_dicom_file(f))
        elif p.is_file():
            if not is_dicom_file(p):
                raise PacsError(f"{p}: not a DICOM file")
            out.append(p)
        else:
            raise PacsError(f"{p}: no such file or folder")
    if not out:
        raise PacsError("nothing to send: no DICOM files in " + ", ".join(str(i) for i in inputs))
    return out


def send_files(
    client: PacsClient, paths: list[Path], progress: Progress | None = None, cancel: CancelFlag | None = None
) -> int:
    return client.store(list(paths), progress or (lambda d, t: None), cancel or _never)
