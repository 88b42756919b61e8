"""DIMSE through pynetdicom: C-ECHO, C-FIND (study root), C-GET (the server sends the instances back on the same
association, so no port of ours has to be open to it), C-STORE. One association per operation; the timeout
applies to connecting, to the association and to each DIMSE message.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from app.pacs.base import CancelFlag, PacsClient, Progress, check_cancel
from app.pacs.errors import PacsError
from app.pacs.model import Query, SeriesInfo, StudyInfo

# pynetdicom logs every association at INFO and failures with tracebacks at ERROR: our messages say it once
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)

#: storage classes offered for C-GET first (the rest of pynetdicom's list fills up to the 128-context limit)
PREFERRED_STORAGE = [
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
]


def _status_text(status) -> str:
    code = getattr(status, "Status", None)
    if code is None:
        return "no status"
    comment = str(status.get("ErrorComment", "") or "")
    return f"0x{int(code):04X}" + (f" {comment}" if comment else "")


class DimseClient(PacsClient):
    def __init__(self, config):
        super().__init__(config)
        from pynetdicom import AE

        self._AE = AE

    # -- association ---------------------------------------------------------------------------------------------
    def _reachable(self, action: str) -> None:
        c = self.config
        try:
            with socket.create_connection((c.host, int(c.port)), timeout=c.timeout):
                pass
        except ConnectionRefusedError:
            raise PacsError(
                f"{action}: cannot connect to {c.host}:{c.port}: connection refused (is the DICOM server running?)"
            ) from None
        except TimeoutError:
            raise PacsError(f"{action}: {c.host}:{c.port} did not answer within {c.timeout:g} s (timeout)") from None
        except OSError as exc:
            raise PacsError(f"{action}: cannot connect to {c.host}:{c.port} ({exc.strerror or exc})") from None

    def _ae(self):
        c = self.config
        ae = self._AE(ae_title=c.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = c.timeout
        ae.maximum_pdu_size = 0
        return ae

    def _associate(self, ae, action: str, **kwargs):
        from pynetdicom import evt

        c = self.config

        def on_open(event):
            # pynetdicom reads a PDU with a blocking recv(): a server that stops mid-PDU would hang it (and its
            # timeouts) forever; a socket timeout turns that into a closed connection
            sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
            if sock is not None:
                sock.settimeout(c.timeout)

        handlers = [*kwargs.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, on_open)]
        assoc = ae.associate(c.host, int(c.port), ae_title=c.called_ae, evt_handlers=handlers, **kwargs)
        if assoc.is_established:
            return assoc
        if not assoc.is_rejected:
            self._reachable(action)  # only now: why there is no association (refused, unreachable, no answer)
        if assoc.is_rejected:
            raise PacsError(
                f"{action}: {c.host}:{c.port} rejected the association: check the called AE title "
                f"{c.called_ae!r} and that the server accepts calling AE title {c.calling_ae!r}"
            )
        raise PacsError(
            f"{action}: no DICOM association with {c.host}:{c.port} (aborted or no answer within {c.timeout:g} s; "
            "is it a DICOM port?)"
        )

    def _lost(self, assoc, action: str) -> PacsError:
        c = self.config
        return PacsError(
            f"{action}: the association with {c.host}:{c.port} broke off: no answer within {c.timeout:g} s "
            "(timeout) or the server aborted it"
        )

    # -- operations ----------------------------------------------------------------------------------------------
    def echo(self) -> str:
        from pynetdicom.sop_class import Verification

        ae = self._ae()
        ae.add_requested_context(Verification)
        assoc = self._associate(ae, "C-ECHO")
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if not status or getattr(status, "Status", None) != 0x0000:
            raise PacsError(f"C-ECHO: {self.config.describe()} answered {_status_text(status)}")
        return f"DICOM server {self.config.describe()} answers C-ECHO"

    def _find(self, identifier, action: str) -> list:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        ae = self._ae()
        ae.add_requested_context(FIND)
        assoc = self._associate(ae, action)
        out = []
        try:
            for status, ds in assoc.send_c_find(identifier, FIND):
                if not status:
                    raise self._lost(assoc, action)
                code = int(status.Status)
                if code in (0xFF00, 0xFF01):
                    if ds is not None:
                        out.append(ds)
                elif code == 0x0000:
                    break
                else:
                    raise PacsError(f"{action}: {self.config.describe()} answered {_status_text(status)}")
        finally:
            if assoc.is_established:
                assoc.release()
        return out

    def find_studies(self, query: Query, limit: int = 500) -> list[StudyInfo]:
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for key in [
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "StudyDate",
            "ModalitiesInStudy",
            "StudyDescription",
            "AccessionNumber",
            "StudyInstanceUID",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
        ]:
            setattr(ds, key, "")
        for key, value in query.filters().items():
            setattr(ds, key, value)
        out = []
        for r in self._find(ds, "C-FIND (studies)")[:limit]:
            uid = str(r.get("StudyInstanceUID", "") or "")
            if not uid:
                continue
            mods = r.get("ModalitiesInStudy", "")
            mods = ",".join(str(m) for m in mods) if isinstance(mods, list | tuple) or hasattr(mods, "_list") else str(
                mods or ""
            )
            out.append(
                StudyInfo(
                    study_uid=uid,
                    patient_name=str(r.get("PatientName", "") or ""),
                    patient_id=str(r.get("PatientID", "") or ""),
                    birth_date=str(r.get("PatientBirthDate", "") or ""),
                    study_date=str(r.get("StudyDate", "") or ""),
                    modalities=mods,
                    description=str(r.get("StudyDescription", "") or ""),
                    accession=str(r.get("AccessionNumber", "") or ""),
                    n_series=_int(r.get("NumberOfStudyRelatedSeries")),
                    n_instances=_int(r.get("NumberOfStudyRelatedInstances")),
                )
            )
        return out

    def find_series(self, study_uid: str) -> list[SeriesInfo]:
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_uid
        for key in ["SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
                    "NumberOfSeriesRelatedInstances"]:
            setattr(ds, key, "")
        out = []
        for r in self._find(ds, "C-FIND (series)"):
            uid = str(r.get("SeriesInstanceUID", "") or "")
            if uid:
                out.append(
                    SeriesInfo(
                        study_uid=study_uid,
                        series_uid=uid,
                        modality=str(r.get("Modality", "") or ""),
                        description=str(r.get("SeriesDescription", "") or ""),
                        number=_int(r.get("SeriesNumber")),
                        n_instances=_int(r.get("NumberOfSeriesRelatedInstances")),
                    )
                )
        return sorted(out, key=lambda s: (s.number if s.number is not None else 1 << 30, s.series_uid))

    def retrieve(
        self, staging, study_uid: str, series_uid: str, progress: Progress, cancel: CancelFlag, total
    ) -> int:
        from pydicom.dataset import Dataset
        from pynetdicom import StoragePresentationContexts, build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        action = f"C-GET of series {series_uid}"
        ae = self._ae()
        ae.add_requested_context(GET)
        classes = list(PREFERRED_STORAGE)
        for cx in StoragePresentationContexts:
            if len(classes) >= 127:
                break
            if cx.abstract_syntax not in classes:
                classes.append(cx.abstract_syntax)
        roles = []
        for uid in classes:
            ae.add_requested_context(uid)
            roles.append(build_role(uid, scp_role=True))
        state = {"n": 0, "error": None, "cancelled": False}

        def on_store(event):
            if cancel():
                state["cancelled"] = True
                return 0xA700  # refused: the retrieval is being cancelled
            try:
                ds = event.dataset
                ds.file_meta = event.file_meta
                staging.write_dataset(ds)
            except PacsError as exc:
                state["error"] = exc
                return 0xA700
            except Exception as exc:  # noqa: BLE001 - a broken instance: refuse it, report after
                state["error"] = PacsError(f"{action}: an instance could not be decoded ({type(exc).__name__})")
                return 0xC000
            state["n"] += 1
            progress(state["n"], total)
            return 0x0000

        progress(0, total)
        assoc = self._associate(ae, action, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        ident = Dataset()
        ident.QueryRetrieveLevel = "SERIES"
        ident.StudyInstanceUID = study_uid
        ident.SeriesInstanceUID = series_uid
        final = None
        try:
            for status, _ in assoc.send_c_get(ident, GET):
                if not status:
                    raise self._lost(assoc, action)
                code = int(status.Status)
                if state["cancelled"] or cancel():
                    assoc.abort()
                    check_cancel(lambda: True)
                if code in (0xFF00, 0xFF01):
                    continue
                final = status
                break
        finally:
            if assoc.is_established:
                assoc.release()
        if state["error"] is not None:
            raise state["error"]
        check_cancel(cancel)
        if final is None:
            raise PacsError(f"{action}: {self.config.describe()} ended the retrieval without a final status")
        code = int(final.Status)
        failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
        if code not in (0x0000, 0xB000) or failed:
            raise PacsError(
                f"{action}: {self.config.describe()} answered {_status_text(final)}"
                + (f" ({failed} instance(s) failed to arrive)" if failed else "")
            )
        return state["n"]

    def store(self, paths: list[Path], progress: Progress, cancel: CancelFlag) -> int:
        import pydicom

        datasets = []
        contexts: dict[str, set[str]] = {}
        for p in paths:
            try:
                ds = pydicom.dcmread(str(p), stop_before_pixels=True)
                sop_class = str(ds.SOPClassUID)
                ts = str(ds.file_meta.TransferSyntaxUID)
            except Exception as exc:  # noqa: BLE001
                raise PacsError(f"{p.name}: not a readable DICOM file ({type(exc).__name__})") from None
            contexts.setdefault(sop_class, set()).add(ts)
            datasets.append(p)
        if sum(len(v) for v in contexts.values()) > 128:
            raise PacsError("C-STORE: more than 128 SOP class / transfer syntax pairs in one send; send fewer files")
        ae = self._ae()
        for sop_class, tss in contexts.items():
            for ts in tss:
                ae.add_requested_context(sop_class, [ts])
        action = "C-STORE"
        assoc = self._associate(ae, action)
        done = 0
        progress(0, len(paths))
        try:
            for p in datasets:
                check_cancel(cancel, "sending")
                ds = pydicom.dcmread(str(p))
                try:
                    status = assoc.send_c_store(ds)
                except (ValueError, RuntimeError) as exc:
                    raise PacsError(f"{action} of {p.name}: {type(exc).__name__}: {exc}") from None
                if not status:
                    raise self._lost(assoc, f"{action} of {p.name}")
                code = int(status.Status)
                if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                    raise PacsError(
                        f"{action}: {self.config.describe()} rejected {p.name} (status {_status_text(status)}); "
                        f"{done} of {len(paths)} file(s) were stored before"
                    )
                done += 1
                progress(done, len(paths))
        finally:
            if assoc.is_established:
                assoc.release()
        return done


def _int(v) -> int | None:
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None
