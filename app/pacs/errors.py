"""The error a PACS operation raises for anything the user or the server causes."""

from __future__ import annotations

import re

from app.errors import MatchGenError


class PacsError(MatchGenError):
    """A PACS server cannot be reached, refuses, times out, or rejects what we send."""


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without credentials: user:password@ in URLs and any of ``secrets`` verbatim."""
    out = _URL_CREDENTIALS.sub(r"\g<scheme>", str(text))
    for s in secrets:
        if s:
            out = out.replace(s, "***")
    return out
