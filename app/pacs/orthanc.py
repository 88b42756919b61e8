"""A local Orthanc server process (Debian ``orthanc`` + ``orthanc-dicomweb``): free localhost ports, a storage
folder, a JSON config, basic-auth users; started, waited for (HTTP and DICOM ports both answer) and stopped.

What the PACS tests (``tests/pacs/orthanc.py`` adds their users and Lua filters) and ``bench retrieve`` run
against. The viewer and the PACS commands never use it; it needs only the Orthanc binary and its plugin.
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

from app.pacs.errors import PacsError

ORTHANC_BIN = os.environ.get("ORTHANC_BIN") or shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN_DIRS = ["/usr/share/orthanc/plugins", "/usr/lib/orthanc"]
INSTALL = "apt-get install orthanc orthanc-dicomweb"


def binary() -> str | None:
    p = ORTHANC_BIN
    return p if p and os.path.isfile(p) and os.access(p, os.X_OK) else None


def dicomweb_plugin() -> str | None:
    for d in PLUGIN_DIRS:
        p = Path(d) / "libOrthancDicomWeb.so"
        if p.exists():
            return str(p)
    return None


def missing_packages() -> list[str]:
    """The Debian packages of what is not installed: ``orthanc`` (the binary), ``orthanc-dicomweb`` (the plugin)."""
    return [pkg for pkg, found in (("orthanc", binary()), ("orthanc-dicomweb", dicomweb_plugin())) if found is None]


def missing() -> str | None:
    """One line saying what is not installed (the binary, the DICOMweb plugin), or None."""
    what = {"orthanc": f"the Orthanc binary ({ORTHANC_BIN})", "orthanc-dicomweb": "its DICOMweb plugin"}
    parts = [what[pkg] for pkg in missing_packages()]
    return f"{' and '.join(parts)} not installed: {INSTALL}" if parts else None


if __name__ == "__main__":  # scripts/test-servers.sh: the packages to install, on one line
    print(*missing_packages())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_config(folder: Path, http_port: int, dicom_port: int, aet: str, users: dict[str, str]) -> dict:
    """Orthanc's settings for a private localhost server: storage in ``folder/db``, only localhost, the given
    basic-auth users, every DIMSE peer allowed (echo, store, find, get, move), DICOMweb at ``/dicom-web/``."""
    plugin = dicomweb_plugin()
    return {
        "Name": "MatchGenOrthanc",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "DicomCheckCalledAet": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": dict(users),
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "Plugins": [plugin] if plugin else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "SaveJobs": False,
        "StorageCompression": False,
    }


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001, S110 - best effort; stop() is the normal way out
        pass


class LocalOrthanc:
    """One Orthanc process on free localhost ports. ``url`` is its DICOMweb root, ``rest`` its REST root,
    ``dimse`` its DIMSE address (AET@127.0.0.1:port); ``auth`` the first user's (name, password) or None.

    ``settings`` are merged over :func:`base_config` (see :meth:`config_dict`); ``config`` is the file written.
    Use it as a context manager (started on entry, stopped on exit, also on error) or call :meth:`start` and
    :meth:`stop`."""

    def __init__(
        self,
        folder: str | os.PathLike,
        users: dict[str, str] | None = None,
        aet: str = "ORTHANC",
        ssl_pem: str | None = None,
        settings: dict | None = None,
        host: str = "localhost",
        die_with_parent: bool = False,
    ):
        self.folder = Path(folder)
        self.users = dict(users or {})
        self.auth = next(iter(self.users.items()), None)
        self.aet = aet
        self.ssl_pem = ssl_pem
        self.ssl = bool(ssl_pem)
        self.settings = dict(settings or {})
        self.die_with_parent = die_with_parent
        self.http_port, self.dicom_port = free_port(), free_port()
        scheme = "https" if ssl_pem else "http"
        self.rest = f"{scheme}://{host}:{self.http_port}"
        self.url = f"{self.rest}/dicom-web"
        self.dimse = f"{aet}@127.0.0.1:{self.dicom_port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "orthanc.log"
        self.config = self.write_config()

    def config_dict(self) -> dict:
        cfg = base_config(self.folder, self.http_port, self.dicom_port, self.aet, self.users)
        cfg["DicomWeb"]["Ssl"] = self.ssl
        if self.ssl_pem:
            cfg.update(SslEnabled=True, SslCertificate=self.ssl_pem, HttpsVerifyPeers=False)
        cfg.update(self.settings)
        return cfg

    def write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        p = self.folder / "orthanc.json"
        p.write_text(json.dumps(self.config_dict(), indent=2))
        return p

    # -- the process ---------------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> LocalOrthanc:
        import requests

        exe = binary()
        if exe is None:
            raise PacsError(f"Orthanc binary not found ({ORTHANC_BIN}): {INSTALL}")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                preexec_fn=_die_with_parent if self.die_with_parent and sys.platform == "linux" else None,  # noqa: PLW1509
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise PacsError(f"Orthanc exited with {code}: {self._log_tail()}")
            try:
                r = requests.get(f"{self.rest}/system", auth=self.auth, timeout=2, verify=False)
                if r.status_code == 200 and self._dicom_ready():
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise PacsError(f"Orthanc did not start within {timeout} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _dicom_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                return True
        except OSError:
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the server process has used so far; None where /proc cannot tell."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, AttributeError):
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> LocalOrthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- REST (seeding and inspecting; independent of the PACS clients) -------------------------------------------
    def get(self, path: str):
        import requests

        r = requests.get(f"{self.rest}{path}", auth=self.auth, timeout=30, verify=False)
        r.raise_for_status()
        return r.json()

    def upload(self, paths, session=None) -> int:
        """POST each file to ``/instances``; returns the bytes sent."""
        import requests

        s = session or requests.Session()
        sent = 0
        try:
            for p in paths:
                data = Path(p).read_bytes()
                r = s.post(f"{self.rest}/instances", data=data, auth=self.auth, timeout=30, verify=False)
                r.raise_for_status()
                sent += len(data)
        finally:
            if session is None:
                s.close()
        return sent
