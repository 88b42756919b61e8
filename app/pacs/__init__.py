"""PACS in and out, without Qt: server settings, DICOMweb (QIDO-RS, WADO-RS, STOW-RS via dicomweb-client) and
DIMSE (C-ECHO, C-FIND, C-GET, C-STORE via pynetdicom) clients behind one interface, and the local retrieval
cache (atomic per instance; a series appears only when complete).

    from app.pacs import connect, parse_server
    with connect(parse_server("http://localhost:8042/dicom-web")) as pacs:
        studies = pacs.find_studies(Query(patient_id="123"))
        folder = retrieve_series(pacs, cache, study_uid, series_uid, progress=..., cancel=...)

Every failure a user can cause (server down, wrong AE title, 401/403/404, timeout, rejected store) raises
:class:`PacsError` with one readable line that never contains a password.
"""

from app.pacs.config import ServerConfig, ServerStore, parse_server
from app.pacs.errors import PacsError
from app.pacs.model import Query, SeriesInfo, StudyInfo

__all__ = ["PacsError", "Query", "SeriesInfo", "ServerConfig", "ServerStore", "StudyInfo", "parse_server", "connect"]


def connect(config: ServerConfig):
    """A client for ``config`` (DICOMweb or DIMSE); use it as a context manager."""
    if config.protocol == "dicomweb":
        from app.pacs.dicomweb import DicomWebClient

        return DicomWebClient(config)
    from app.pacs.dimse import DimseClient

    return DimseClient(config)
