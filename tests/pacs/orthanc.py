"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) for the PACS tests: free localhost ports, a
temporary storage folder, a JSON config, basic-auth users and two Lua filters that give the tests a server that
refuses some things:

- user ``viewer`` may only read (any other HTTP method: 403 Forbidden),
- instances of modality SEG for patient ``matchgen-reject`` are refused (the filter raises an error, so C-STORE
  answers 0xA700 and STOW-RS leaves them out of its stored list; a filter returning false would report success).

Also used by hand (docs/pacs.md): ``python tests/pacs/orthanc.py DIR`` writes DIR/orthanc.json and prints
the command that starts it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ORTHANC_BIN = os.environ.get("ORTHANC_BIN") or shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN_DIRS = ["/usr/share/orthanc/plugins", "/usr/lib/orthanc"]
USER, PASSWORD = "matchgen", "s3cret-Pw!"
READONLY_USER, READONLY_PASSWORD = "viewer", "view-only-Pw"
AET = "ORTHANC"
REJECT_PATIENT = "matchgen-reject"

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


def binary() -> str | None:
    p = ORTHANC_BIN
    return p if p and os.path.isfile(p) and os.access(p, os.X_OK) else None


def dicomweb_plugin() -> str | None:
    for d in PLUGIN_DIRS:
        for name in ("libOrthancDicomWeb.so",):
            p = Path(d) / name
            if p.exists():
                return str(p)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, http_port: int, dicom_port: int, ssl_pem: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "filters.lua").write_text(LUA)
    plugin = dicomweb_plugin()
    cfg = {
        "Name": "MatchGenTestOrthanc",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": AET,
        "DicomCheckCalledAet": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD, READONLY_USER: READONLY_PASSWORD},
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomScpTimeout": 5,
        "LuaScripts": [str(folder / "filters.lua")],
        "Plugins": [plugin] if plugin else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": bool(ssl_pem)},
        "SaveJobs": False,
        "ConcurrentJobs": 1,
        "HttpsVerifyPeers": False,
        "StorageCompression": False,
        "MaximumStorageCacheSize": 0,
    }
    if ssl_pem:
        cfg["SslEnabled"] = True
        cfg["SslCertificate"] = ssl_pem
    p = folder / "orthanc.json"
    p.write_text(json.dumps(cfg, indent=2))
    return p


class Orthanc:
    """One Orthanc process. ``url`` is its DICOMweb root; ``rest`` its REST root."""

    def __init__(self, folder: Path, ssl_pem: str | None = None):
        self.folder = Path(folder)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.ssl = bool(ssl_pem)
        self.config = write_config(self.folder, self.http_port, self.dicom_port, ssl_pem)
        scheme = "https" if ssl_pem else "http"
        self.rest = f"{scheme}://localhost:{self.http_port}"
        self.url = f"{self.rest}/dicom-web"
        self.dimse = f"{AET}@127.0.0.1:{self.dicom_port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "orthanc.log"

    def start(self, timeout: float = 30.0) -> Orthanc:
        import requests

        exe = binary()
        if exe is None:
            raise RuntimeError(f"Orthanc binary not found ({ORTHANC_BIN})")
        self.proc = subprocess.Popen(
            [exe, str(self.config)], stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, cwd=self.folder
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                r = requests.get(f"{self.rest}/system", auth=(USER, PASSWORD), timeout=2, verify=False)
                if r.status_code == 200:
                    if self._dicom_ready():
                        return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not start within {timeout} s: {self.log.read_text()[-2000:]}")

    def _dicom_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    # -- REST helpers for the tests (seeding, inspecting), independent of the code under test ---------------------
    def upload(self, paths) -> None:
        import requests

        for p in paths:
            r = requests.post(
                f"{self.rest}/instances", data=Path(p).read_bytes(), auth=(USER, PASSWORD), timeout=30, verify=False
            )
            r.raise_for_status()

    def get(self, path: str):
        import requests

        r = requests.get(f"{self.rest}{path}", auth=(USER, PASSWORD), timeout=30, verify=False)
        r.raise_for_status()
        return r.json()

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
