"""``pacs``: talk to a PACS over DICOMweb (a URL) or DIMSE (AET@host:port): echo, find, get, send; the saved
servers (shared with the viewer's settings) and the local retrieval cache.

    python main.py pacs echo --server http://localhost:8042/dicom-web --user matchgen
    python main.py pacs find --server ORTHANC@localhost:4242 --patient-name "DOE*" --date-from 2024-01-01
    python main.py pacs find --server NAME --study-uid UID          (the study's series)
    python main.py pacs get  --server NAME --study-uid UID [--series-uid UID | --all-series]
    python main.py pacs send --server NAME FILE_OR_FOLDER...
    python main.py pacs servers list | add NAME --server ... | remove NAME
    python main.py pacs cache list | clear

A password is never an option value (it would show in the shell history and the process list): it comes from
a saved server, from ``MATCHGEN_PACS_PASSWORD``, or from a prompt (``--ask-password``).
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "PACS: echo, find, get and send over DICOMweb or DIMSE; saved servers; the retrieval cache"
DESCRIPTION = (
    HELP + ". --server is a DICOMweb URL, AET@host:port or a saved name. A password is never an option value: it "
    "comes from a saved server, MATCHGEN_PACS_PASSWORD or a prompt (--ask-password). See docs/pacs.md."
)


def add_server_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("server")
    g.add_argument(
        "--server",
        required=required,
        metavar="URL|AET@HOST:PORT|NAME",
        help="DICOMweb root URL (http[s]://host:port/dicom-web), DIMSE address AET@host:port, or a saved name",
    )
    g.add_argument("--user", default=None, help="user name for DICOMweb (HTTP basic authentication)")
    g.add_argument(
        "--ask-password", action="store_true", help="prompt for the password (else MATCHGEN_PACS_PASSWORD or saved)"
    )
    g.add_argument("--ca-file", default=None, metavar="PEM", help="CA certificate(s) that sign the HTTPS server's")
    g.add_argument("--timeout", type=float, default=None, help="seconds per network operation (default 30)")
    g.add_argument("--calling-aet", default=None, help="our AE title for DIMSE (default MATCHGEN)")


def add_cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="retrieval cache folder (default: MATCHGEN_PACS_CACHE or ~/.cache/matchgen/pacs)",
    )


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="pacs_command", metavar="ACTION", parser_class=type(p))
    sub.required = True
    e = sub.add_parser("echo", help="check the server answers and accepts us (C-ECHO, or a QIDO-RS search)")
    add_server_options(e)
    f = sub.add_parser("find", help="search studies (or list a study's series with --study-uid)")
    add_server_options(f)
    f.add_argument("--patient-name", default="", help="patient name, DICOM wildcards allowed (DOE*)")
    f.add_argument("--patient-id", default="", help="patient ID")
    f.add_argument("--date-from", default=None, help="study date from (YYYYMMDD or YYYY-MM-DD)")
    f.add_argument("--date-to", default=None, help="study date to (YYYYMMDD or YYYY-MM-DD)")
    f.add_argument("--modality", default="", help="modality in the study (MR, CT, ...)")
    f.add_argument("--accession", default="", help="accession number")
    f.add_argument("--study-uid", default="", help="list this study's series instead")
    f.add_argument("--limit", type=int, default=200, help="at most this many studies (default 200)")
    f.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g = sub.add_parser("get", help="retrieve a series (or the whole study) into the cache; prints its folder")
    add_server_options(g)
    add_cache_option(g)
    g.add_argument("--study-uid", required=True)
    g.add_argument("--series-uid", default=None, help="which series (default: the study's only image series)")
    g.add_argument("--all-series", action="store_true", help="the whole study, every series")
    g.add_argument("--refresh", action="store_true", help="retrieve again even if the cache has it")
    s = sub.add_parser("send", help="send DICOM files or folders (STOW-RS or C-STORE)")
    add_server_options(s)
    s.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER")
    sv = sub.add_parser("servers", help="list, add or remove saved servers (shared with the viewer)")
    sv_sub = sv.add_subparsers(dest="servers_command", metavar="ACTION", parser_class=type(p))
    sv_sub.required = True
    sv_sub.add_parser("list", help="the saved servers (never their passwords)")
    a = sv_sub.add_parser("add", help="save a server under a name (replaces one of that name)")
    a.add_argument("name")
    add_server_options(a)
    a.add_argument(
        "--remember-password",
        action="store_true",
        help="also save the password (from the prompt or MATCHGEN_PACS_PASSWORD) in the settings file",
    )
    r = sv_sub.add_parser("remove", help="forget a saved server")
    r.add_argument("name")
    c = sub.add_parser("cache", help="show or clear the local retrieval cache")
    add_cache_option(c)
    c.add_argument("cache_command", nargs="?", choices=("list", "clear"), default="list")


# -- helpers shared with ``detect --server`` -----------------------------------------------------------------------
def settings_store():
    """The saved servers, in the viewer's QSettings file (QtCore only; no display needed)."""
    from PySide6.QtCore import QSettings

    from app.pacs.config import APP, ORG, STORE_KEY, ServerStore

    qs = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORG, APP)

    def load():
        v = qs.value(STORE_KEY)
        return str(v) if v else None

    def save(text: str) -> None:
        qs.setValue(STORE_KEY, text)
        qs.sync()

    return ServerStore(load, save)


def server_from_args(args: argparse.Namespace, store=None):
    from app.pacs.config import parse_server

    store = store if store is not None else settings_store()
    cfg = parse_server(
        args.server,
        store,
        username=getattr(args, "user", None),
        ca_file=getattr(args, "ca_file", None),
        timeout=getattr(args, "timeout", None),
        calling_ae=getattr(args, "calling_aet", None),
    )
    if getattr(args, "ask_password", False):
        import getpass

        cfg = cfg.with_password(getpass.getpass(f"password for {cfg.label()}: "))
    return cfg


def cache_from_args(args: argparse.Namespace):
    from app.pacs.cache import RetrievalCache

    return RetrievalCache(getattr(args, "cache", None))


class ProgressLine:
    """A progress line on stderr (only when it is a terminal; Ctrl+C cancels and nothing partial is kept)."""

    def __init__(self, what: str):
        self.what = what
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total) -> None:
        if not self.tty or done == self.last:
            return
        self.last = done
        tail = f"{done}/{total}" if total else f"{done}"
        sys.stderr.write(f"\r{self.what}: {tail} instance(s)")
        sys.stderr.flush()

    def end(self) -> None:
        if self.tty and self.last >= 0:
            sys.stderr.write("\n")


# -- the actions -----------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    return {
        "echo": _echo,
        "find": _find,
        "get": _get,
        "send": _send,
        "servers": _servers,
        "cache": _cache,
    }[args.pacs_command](args)


def _echo(args) -> int:
    from app.pacs import connect

    with connect(server_from_args(args)) as c:
        print(c.echo())
    return 0


def _find(args) -> int:
    from app.pacs import Query, connect
    from app.pacs.model import SERIES_COLUMNS, STUDY_COLUMNS, date_range, format_table

    cfg = server_from_args(args)
    with connect(cfg) as c:
        if args.study_uid:
            series = c.find_series(args.study_uid)
            if args.json:
                print(json.dumps([{k: v for k, v in vars(s).items() if k != "extra"} for s in series], indent=2))
            elif not series:
                print(f"study {args.study_uid}: no series on {cfg.label()}")
            else:
                print(format_table(SERIES_COLUMNS, [s.row() for s in series]))
            return 0
        q = Query(
            patient_name=args.patient_name,
            patient_id=args.patient_id,
            study_date=date_range(args.date_from, args.date_to) or "",
            modality=args.modality,
            accession=args.accession,
        )
        studies = c.find_studies(q, limit=args.limit)
    if args.json:
        print(json.dumps([vars(s) for s in studies], indent=2))
    elif not studies:
        print(f"no studies match on {cfg.label()}")
    else:
        print(format_table(STUDY_COLUMNS, [s.row() for s in studies]))
        print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}")
    return 0


def _get(args) -> int:
    from app.pacs import connect
    from app.pacs.base import retrieve_series, retrieve_study

    cfg = server_from_args(args)
    cache = cache_from_args(args)
    bar = ProgressLine("retrieving")
    with connect(cfg) as c:
        try:
            if args.all_series:
                folder = retrieve_study(c, cache, args.study_uid, bar, None)
            else:
                _info, folder = retrieve_series(
                    c, cache, args.study_uid, args.series_uid, progress=bar, refresh=args.refresh
                )
        finally:
            bar.end()
    print(folder)
    return 0


def _send(args) -> int:
    from app.pacs import connect
    from app.pacs.base import dicom_files, send_files

    cfg = server_from_args(args)
    files = dicom_files(args.inputs)
    bar = ProgressLine("sending")
    with connect(cfg) as c:
        try:
            n = send_files(c, files, bar)
        finally:
            bar.end()
    print(f"sent {n} instance(s) to {cfg.label()}")
    return 0


def _servers(args) -> int:
    from app.pacs.model import format_table

    store = settings_store()
    if args.servers_command == "list":
        rows = [[s.name, s.protocol, s.describe(), f"{s.timeout:g} s", "yes" if s.password else "no"]
                for s in store.servers()]
        if not rows:
            print("no saved servers (add one: python main.py pacs servers add NAME --server ...)")
        else:
            print(format_table(["Name", "Protocol", "Address", "Timeout", "Password saved"], rows))
        return 0
    if args.servers_command == "add":
        from dataclasses import replace

        cfg = replace(server_from_args(args, store), name=args.name)
        store.put(cfg, remember_password=args.remember_password)
        print(f"saved server {cfg.label()}")
        return 0
    if store.remove(args.name):
        print(f"removed server {args.name}")
        return 0
    from app.pacs.errors import PacsError

    raise PacsError(f"no saved server named {args.name!r}")


def _cache(args) -> int:
    from app.pacs.cache import human_size

    cache = cache_from_args(args)
    if args.cache_command == "clear":
        freed = cache.clear()
        print(f"cleared {cache.root} ({human_size(freed)} freed)")
        return 0
    entries = cache.entries()
    print(f"cache folder: {cache.root} ({human_size(cache.size_bytes())})")
    for e in entries:
        print(f"  {e.study_uid}/{e.series_uid}: {e.files} file(s), {human_size(e.bytes)}")
    if not entries:
        print("  (empty)")
    return 0
