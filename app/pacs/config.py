"""PACS server settings: one :class:`ServerConfig` per server, named servers in a :class:`ServerStore`.

``--server`` accepts a DICOMweb root URL (``http[s]://host:port/dicom-web``), a DIMSE address
(``AET@host:port``) or the name of a saved server. The store keeps servers as JSON under one key of the
viewer's QSettings file (``ORG``/``APP``/``STORE_KEY``), so the command line and the viewer share them; this
module only sees two callables (load, save) and never imports Qt.

Passwords: never part of ``repr``, ``describe()`` or any message; saved only when the user asks to (the
settings file is plain text, readable by the user's account), otherwise taken from ``MATCHGEN_PACS_PASSWORD``
or asked for.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

from app.pacs.errors import PacsError

ORG, APP, STORE_KEY = "MatchGen", "viewer", "pacs/servers"
PASSWORD_ENV = "MATCHGEN_PACS_PASSWORD"
DEFAULT_CALLING_AE = "MATCHGEN"
DEFAULT_TIMEOUT = 30.0

_AE = re.compile(r"^(?P<ae>[^@\s]{1,16})@(?P<host>[^:\s]+):(?P<port>\d{1,5})$")
_AE_CHARS = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire, no backslash


def check_ae_title(ae: str, what: str = "AE title") -> str:
    ae = (ae or "").strip()
    if not ae or not _AE_CHARS.match(ae):
        raise PacsError(f"{what} {ae!r} must be 1-16 printable characters without a backslash")
    return ae


@dataclass(frozen=True)
class ServerConfig:
    name: str = ""
    protocol: str = "dicomweb"  # "dicomweb" or "dimse"
    url: str = ""  # DICOMweb root, e.g. http://localhost:8042/dicom-web
    host: str = ""  # DIMSE
    port: int = 104
    called_ae: str = ""
    calling_ae: str = DEFAULT_CALLING_AE
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""  # PEM bundle to verify an HTTPS server (default: the system's)
    timeout: float = DEFAULT_TIMEOUT  # seconds, per network operation

    def describe(self) -> str:
        """Where the server is, without credentials."""
        if self.protocol == "dicomweb":
            who = f"{self.username}@" if self.username else ""
            parts = urlsplit(self.url)
            return urlunsplit((parts.scheme, who + (parts.hostname or "") + (f":{parts.port}" if parts.port else ""),
                               parts.path, "", ""))
        return f"{self.called_ae}@{self.host}:{self.port} (from {self.calling_ae})"

    def label(self) -> str:
        return f"{self.name} ({self.describe()})" if self.name else self.describe()

    def with_password(self, password: str) -> ServerConfig:
        return replace(self, password=password)

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def validate(self) -> ServerConfig:
        if self.protocol not in ("dicomweb", "dimse"):
            raise PacsError(f"server protocol {self.protocol!r}: use dicomweb or dimse")
        if not (self.timeout > 0):
            raise PacsError(f"timeout {self.timeout}: must be > 0 seconds")
        if self.protocol == "dicomweb":
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise PacsError(f"DICOMweb URL {self.describe()!r}: use http://host:port/path or https://...")
            if self.ca_file and not os.path.isfile(self.ca_file):
                raise PacsError(f"CA file {self.ca_file}: no such file")
        else:
            if not self.host:
                raise PacsError("DIMSE server: host is missing")
            if not (0 < int(self.port) < 65536):
                raise PacsError(f"DIMSE port {self.port}: must be 1-65535")
            check_ae_title(self.called_ae, "called AE title")
            check_ae_title(self.calling_ae, "calling AE title")
        return self

    def to_dict(self, with_password: bool = False) -> dict:
        d = asdict(self)
        if not with_password:
            d.pop("password")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ServerConfig:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        if "port" in kw:
            kw["port"] = int(kw["port"])
        if "timeout" in kw:
            kw["timeout"] = float(kw["timeout"])
        return cls(**kw)


def _split_url(text: str) -> tuple[str, str, str]:
    """(url without credentials, user, password) from an http(s) URL that may hold user:password@."""
    parts = urlsplit(text)
    user, password = parts.username or "", parts.password or ""
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, "")), user, password


def parse_server(text: str, store: ServerStore | None = None, **overrides) -> ServerConfig:
    """A ServerConfig from ``--server`` (URL, AET@host:port or a saved name) and option overrides (empty or
    None overrides are ignored). A password comes from the override, the URL, the store or the environment."""
    text = (text or "").strip()
    if not text:
        raise PacsError("no server given: use --server URL, AET@host:port or a saved server's name")
    overrides = {k: v for k, v in overrides.items() if v not in (None, "")}
    if text.lower().startswith(("http://", "https://")):
        url, user, password = _split_url(text)
        cfg = ServerConfig(protocol="dicomweb", url=url, username=user, password=password)
    elif m := _AE.match(text):
        cfg = ServerConfig(protocol="dimse", called_ae=m["ae"], host=m["host"], port=int(m["port"]))
    else:
        cfg = store.get(text) if store is not None else None
        if cfg is None:
            names = store.names() if store is not None else []
            saved = f"; saved servers: {', '.join(names)}" if names else "; no servers are saved yet"
            raise PacsError(f"unknown server {text!r}: give a URL (http[s]://...), AET@host:port or a name{saved}")
    cfg = replace(cfg, **overrides)
    if not cfg.password and cfg.username and os.environ.get(PASSWORD_ENV):
        cfg = cfg.with_password(os.environ[PASSWORD_ENV])
    return cfg.validate()


class ServerStore:
    """Named servers as JSON through ``load() -> str | None`` and ``save(str)`` (QSettings in the app)."""

    def __init__(self, load: Callable[[], str | None], save: Callable[[str], None]):
        self._load, self._save = load, save

    def _all(self) -> list[dict]:
        raw = self._load()
        if not raw:
            return []
        try:
            data = json.loads(raw)
        except (TypeError, ValueError):
            return []
        return [d for d in data if isinstance(d, dict) and d.get("name")] if isinstance(data, list) else []

    def names(self) -> list[str]:
        return [d["name"] for d in self._all()]

    def get(self, name: str) -> ServerConfig | None:
        for d in self._all():
            if d["name"] == name:
                try:
                    return ServerConfig.from_dict(d)
                except (TypeError, ValueError):
                    raise PacsError(f"saved server {name!r} is damaged in the settings; save it again") from None
        return None

    def servers(self) -> list[ServerConfig]:
        return [c for c in (self.get(n) for n in self.names()) if c is not None]

    def put(self, cfg: ServerConfig, remember_password: bool = False) -> None:
        if not cfg.name:
            raise PacsError("a saved server needs a name")
        cfg.validate()
        rest = [d for d in self._all() if d["name"] != cfg.name]
        rest.append(cfg.to_dict(with_password=remember_password and bool(cfg.password)))
        self._save(json.dumps(rest))

    def remove(self, name: str) -> bool:
        all_ = self._all()
        rest = [d for d in all_ if d["name"] != name]
        self._save(json.dumps(rest))
        return len(rest) != len(all_)


def memory_store() -> ServerStore:
    """A store in memory (tests, or a session that must not touch the settings file)."""
    box: dict[str, str] = {}
    return ServerStore(lambda: box.get("v"), lambda v: box.__setitem__("v", v))
