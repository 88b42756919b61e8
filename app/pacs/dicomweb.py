"""DICOMweb through dicomweb-client: QIDO-RS (search), WADO-RS (retrieve, streamed one instance at a time),
STOW-RS (send, in batches). A requests session carries the credentials (HTTP basic), the CA file for HTTPS and
the timeout; HTTP errors become one-line :class:`PacsError` messages that name the cause and never a password.
"""

from __future__ import annotations

import logging
from pathlib import Path

from app.pacs.base import CancelFlag, PacsClient, Progress, check_cancel
from app.pacs.errors import PacsError
from app.pacs.model import Query, SeriesInfo, StudyInfo

#: instances per STOW-RS request, and the most bytes per request
STOW_BATCH = 16
STOW_BATCH_BYTES = 64 * 2**20
#: bytes read at a time from a WADO-RS stream (instances reach the cache as they arrive, memory stays bounded)
STREAM_CHUNK = 64 * 1024

STUDY_FIELDS = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "ModalitiesInStudy",
    "StudyDescription",
    "AccessionNumber",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
]
SERIES_FIELDS = ["Modality", "SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances"]

# dicomweb-client logs request URLs and headers at DEBUG (an Authorization header among them): keep it quiet
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)


def _text(ds, key: str) -> str:
    from pydicom.multival import MultiValue

    v = ds.get(key)
    if v is None or v == "":
        return ""
    if isinstance(v, MultiValue | list | tuple):
        return ",".join(str(x) for x in v)
    return str(v)


def _session_class():
    import requests

    class Session(requests.Session):
        """Sends QIDO wildcards (* and ?) unescaped: both are legal in a query string (RFC 3986), and some
        servers (Orthanc 1.10's DICOMweb plugin) match %2A literally."""

        def prepare_request(self, request):
            prepared = super().prepare_request(request)
            url = prepared.url or ""
            if "?" in url:
                base, query = url.split("?", 1)
                prepared.url = base + "?" + query.replace("%2A", "*").replace("%3F", "?")
            return prepared

    return Session


def _int(ds, key: str) -> int | None:
    v = ds.get(key)
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _dataset(item: dict):
    import pydicom

    try:
        return pydicom.Dataset.from_json(item)
    except Exception:  # noqa: BLE001 - a server's odd JSON: keep what parses
        ds = pydicom.Dataset()
        return ds


class DicomWebClient(PacsClient):
    def __init__(self, config):
        super().__init__(config)
        import requests
        from dicomweb_client.api import DICOMwebClient

        self._requests = requests
        session = _session_class()()
        if config.username:
            session.auth = (config.username, config.password)
        session.verify = config.ca_file or True
        session.trust_env = False  # no proxy from the environment for a hospital-internal server
        self._session = session
        self._client = DICOMwebClient(
            url=config.url, session=session, timeout=config.timeout, chunk_size=STREAM_CHUNK
        )
        self._client.set_http_retry_params(retry=False)

    def close(self) -> None:
        self._session.close()

    # -- errors --------------------------------------------------------------------------------------------------
    def _error(self, exc: BaseException, action: str) -> PacsError:
        r = self._requests
        where = self.config.describe()
        if isinstance(exc, r.exceptions.HTTPError) and exc.response is not None:
            code = exc.response.status_code
            user = self.config.username
            if code == 401:
                who = f"user {user!r}" if user else "no user name given"
                msg = f"{action}: 401 Unauthorized at {where} ({who}): check the user name and password"
            elif code == 403:
                who = f"user {user!r}" if user else "anonymous access"
                msg = f"{action}: 403 Forbidden at {where}: the server does not allow {who} to do this"
            elif code == 404:
                msg = (
                    f"{action}: 404 Not Found at {where}: the study/series is not on the server, or the URL is "
                    "not the DICOMweb root (e.g. http://host:8042/dicom-web)"
                )
            else:
                reason = exc.response.reason or ""
                msg = f"{action}: the server answered HTTP {code} {reason} ({where})"
        elif isinstance(exc, r.exceptions.SSLError):
            msg = (
                f"{action}: the HTTPS certificate of {where} is not trusted: give the server's CA file "
                f"(--ca-file){' (the CA file given does not sign it)' if self.config.ca_file else ''}"
            )
        elif isinstance(exc, r.exceptions.Timeout):
            msg = f"{action}: {where} did not answer within {self.config.timeout:g} s (timeout)"
        elif isinstance(exc, r.exceptions.ConnectionError):
            text = str(exc)
            if "timed out" in text.lower():
                msg = f"{action}: {where} stopped answering (timeout after {self.config.timeout:g} s)"
            elif "refused" in text.lower():
                msg = f"{action}: cannot connect to {where}: connection refused (is the server running?)"
            else:
                msg = f"{action}: connection to {where} failed ({type(exc).__name__})"
        elif isinstance(exc, r.exceptions.RequestException):
            msg = f"{action}: the transfer from {where} broke off ({type(exc).__name__})"
        else:
            msg = f"{action}: unexpected answer from {where} ({type(exc).__name__}: {exc})"
        return PacsError(self._scrub(" ".join(msg.split())))

    def _call(self, action: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (self._requests.exceptions.RequestException, ValueError, OSError) as exc:
            raise self._error(exc, action) from None

    # -- operations ----------------------------------------------------------------------------------------------
    def echo(self) -> str:
        self._call("echo (QIDO-RS search)", self._client.search_for_studies, limit=1)
        return f"DICOMweb server {self.config.describe()} answers"

    def find_studies(self, query: Query, limit: int = 500) -> list[StudyInfo]:
        found = self._call(
            "study search (QIDO-RS)",
            self._client.search_for_studies,
            search_filters=query.filters(),
            fields=STUDY_FIELDS,
            limit=limit,
        )
        out = []
        for item in found or []:
            ds = _dataset(item)
            uid = _text(ds, "StudyInstanceUID")
            if not uid:
                continue
            out.append(
                StudyInfo(
                    study_uid=uid,
                    patient_name=_text(ds, "PatientName"),
                    patient_id=_text(ds, "PatientID"),
                    birth_date=_text(ds, "PatientBirthDate"),
                    study_date=_text(ds, "StudyDate"),
                    modalities=_text(ds, "ModalitiesInStudy"),
                    description=_text(ds, "StudyDescription"),
                    accession=_text(ds, "AccessionNumber"),
                    n_series=_int(ds, "NumberOfStudyRelatedSeries"),
                    n_instances=_int(ds, "NumberOfStudyRelatedInstances"),
                )
            )
        return out

    def find_series(self, study_uid: str) -> list[SeriesInfo]:
        try:
            found = self._client.search_for_series(study_instance_uid=study_uid, fields=SERIES_FIELDS)
        except self._requests.exceptions.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return []
            raise self._error(exc, "series search (QIDO-RS)") from None
        except (self._requests.exceptions.RequestException, ValueError, OSError) as exc:
            raise self._error(exc, "series search (QIDO-RS)") from None
        out = []
        for item in found or []:
            ds = _dataset(item)
            uid = _text(ds, "SeriesInstanceUID")
            if uid:
                out.append(
                    SeriesInfo(
                        study_uid=study_uid,
                        series_uid=uid,
                        modality=_text(ds, "Modality"),
                        description=_text(ds, "SeriesDescription"),
                        number=_int(ds, "SeriesNumber"),
                        n_instances=_int(ds, "NumberOfSeriesRelatedInstances"),
                    )
                )
        return sorted(out, key=lambda s: (s.number if s.number is not None else 1 << 30, s.series_uid))

    def retrieve(
        self, staging, study_uid: str, series_uid: str, progress: Progress, cancel: CancelFlag, total
    ) -> int:
        action = f"retrieving series {series_uid} (WADO-RS)"
        n = 0
        progress(0, total)
        try:
            stream = self._client.iter_series(study_instance_uid=study_uid, series_instance_uid=series_uid)
            try:
                for ds in stream:  # one instance in memory at a time
                    check_cancel(cancel)
                    staging.write_dataset(ds)
                    n += 1
                    progress(n, total)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
        except (self._requests.exceptions.RequestException, ValueError, OSError) as exc:
            raise self._error(exc, action) from None
        except Exception as exc:  # urllib3/pydicom errors escape while streaming a body that broke off
            if type(exc).__module__.startswith(("urllib3", "http.client", "pydicom")):
                raise self._error(self._requests.exceptions.ConnectionError(str(exc)), action) from None
            raise
        return n

    def store(self, paths: list[Path], progress: Progress, cancel: CancelFlag) -> int:
        import pydicom

        done = 0
        progress(0, len(paths))
        batch: list = []
        size = 0

        def flush():
            nonlocal done, batch, size
            if not batch:
                return
            resp = self._call("sending (STOW-RS)", self._client.store_instances, datasets=[d for _, d in batch])
            sent = {str(d.SOPInstanceUID): p for p, d in batch}
            failed = list(resp.get("FailedSOPSequence") or []) if resp is not None else []
            stored = {str(i.get("ReferencedSOPInstanceUID", "")) for i in (resp.get("ReferencedSOPSequence") or [])}
            # a server may also drop an instance without listing it as failed: only what it lists as stored counts
            missing = [uid for uid in sent if uid not in stored] if resp is not None and len(resp) else []
            if failed or missing:
                item = failed[0] if failed else None
                uid = str(item.get("ReferencedSOPInstanceUID", "")) if item is not None else missing[0]
                reason = item.get("FailureReason") if item is not None else None
                name = sent[uid].name if uid in sent else batch[0][0].name
                n_bad = len({str(i.get("ReferencedSOPInstanceUID", "")) for i in failed} | set(missing))
                raise PacsError(
                    f"sending (STOW-RS): {self.config.describe()} rejected {n_bad} of {len(batch)} instance(s), "
                    f"e.g. {name}" + (f" (failure reason 0x{int(reason):04X})" if reason is not None else "")
                    + (f"; {done} instance(s) were stored before" if done else "")
                )
            done += len(batch)
            progress(done, len(paths))
            batch, size = [], 0

        for p in paths:
            check_cancel(cancel, "sending")
            try:
                ds = pydicom.dcmread(str(p))
            except Exception as exc:  # noqa: BLE001
                raise PacsError(f"{p.name}: not a readable DICOM file ({type(exc).__name__})") from None
            batch.append((p, ds))
            size += p.stat().st_size
            if len(batch) >= STOW_BATCH or size >= STOW_BATCH_BYTES:
                flush()
        flush()
        return done
