"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) for the PACS tests: the process itself is
:class:`app.pacs.orthanc.LocalOrthanc` (free localhost ports, a temporary storage folder, a JSON config); this adds
the tests' basic-auth users and two Lua filters that give the tests a server that refuses some things:

- user ``viewer`` may only read (any other HTTP method: 403 Forbidden),
- instances of modality SEG for patient ``matchgen-reject`` are refused (the filter raises an error, so C-STORE
  answers 0xA700 and STOW-RS leaves them out of its stored list; a filter returning false would report success).

Also used by hand (docs/pacs.md): ``python tests/pacs/orthanc.py DIR`` writes DIR/orthanc.json and prints
the command that starts it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: python tests/pacs/orthanc.py DIR
    sys.path.insert(0, str(ROOT))

from app.pacs.orthanc import (  # noqa: E402
    ORTHANC_BIN,
    PLUGIN_DIRS,
    LocalOrthanc,
    base_config,
    binary,
    dicomweb_plugin,
    free_port,
    missing,
)

USER, PASSWORD = "matchgen", "s3cret-Pw!"
READONLY_USER, READONLY_PASSWORD = "viewer", "view-only-Pw"
USERS = {USER: PASSWORD, READONLY_USER: READONLY_PASSWORD}
AET = "ORTHANC"
REJECT_PATIENT = "matchgen-reject"
__all__ = ["ORTHANC_BIN", "PLUGIN_DIRS", "Orthanc", "binary", "dicomweb_plugin", "free_port", "missing", "write_config"]

LUA = f"""
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if username == '{READONLY_USER}' and method ~= 'GET' then
    return false
  end
  return true
end

function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.PatientID == '{REJECT_PATIENT}' and dicom.Modality == 'SEG' then
    error('MatchGen test server: SEG instances of this patient are refused')
  end
  return true
end
"""


def _test_settings(folder: Path) -> dict:
    (folder / "filters.lua").write_text(LUA)
    return {
        "Name": "MatchGenTestOrthanc",
        "DicomScpTimeout": 5,
        "LuaScripts": [str(folder / "filters.lua")],
        "ConcurrentJobs": 1,
        "HttpsVerifyPeers": False,
        "MaximumStorageCacheSize": 0,
    }


def write_config(folder: Path, http_port: int, dicom_port: int, ssl_pem: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = base_config(folder, http_port, dicom_port, AET, USERS)
    cfg.update(_test_settings(folder))
    cfg["DicomWeb"]["Ssl"] = bool(ssl_pem)
    if ssl_pem:
        cfg["SslEnabled"] = True
        cfg["SslCertificate"] = ssl_pem
    p = folder / "orthanc.json"
    p.write_text(json.dumps(cfg, indent=2))
    return p


class Orthanc(LocalOrthanc):
    """One Orthanc process with the tests' users and filters. ``url`` is its DICOMweb root; ``rest`` its REST
    root."""

    def __init__(self, folder: Path, ssl_pem: str | None = None):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(folder, users=USERS, aet=AET, ssl_pem=ssl_pem, settings=_test_settings(folder))

    # -- REST helpers for the tests (seeding, inspecting), independent of the code under test ---------------------
    def series_of_study(self, study_uid: str) -> list[dict]:
        import requests

        r = requests.post(
            f"{self.rest}/tools/find",
            json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
            auth=(USER, PASSWORD),
            timeout=30,
            verify=False,
        )
        r.raise_for_status()
        return r.json()

    def delete_series(self, study_uid: str, series_uid: str) -> None:
        """Remove one series from the server (REST ``DELETE /series/{id}``)."""
        import requests

        (hit,) = [s for s in self.series_of_study(study_uid) if s["MainDicomTags"]["SeriesInstanceUID"] == series_uid]
        r = requests.delete(f"{self.rest}/series/{hit['ID']}", auth=(USER, PASSWORD), timeout=30, verify=False)
        r.raise_for_status()


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "orthanc-local")
    cfg = write_config(folder.resolve(), 8042, 4242)
    print(f"wrote {cfg}\nstart it with:  {ORTHANC_BIN} {cfg}")
    print(f"users: {USER} / {PASSWORD} (read-write), {READONLY_USER} / {READONLY_PASSWORD} (read-only)")
