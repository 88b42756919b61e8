"""The PACS side of ``batch`` (kept apart from the batch itself, as ``detect_dicom`` is for ``detect``):

    python main.py batch --server NAME|URL|AET@HOST:PORT --query StudyDate=20261201 [--query Modality=MR]
                         --out DIR [--send]

- **Query**: study-level keys as DICOM keywords (``PatientName``, ``PatientID``, ``StudyDate`` (a date or a range
  ``YYYYMMDD-YYYYMMDD``), ``Modality`` / ``ModalitiesInStudy``, ``AccessionNumber``, ``StudyInstanceUID``),
  searched with QIDO-RS or C-FIND as ``pacs find`` does. Every image series of every matching study (with
  ``Modality``: of that modality) is one batch study.
- **Retrieve**: each series into the retrieval cache (:func:`app.pacs.base.retrieve_series`: staged, renamed
  into the cache only when complete; a series already cached with all its images is not fetched again),
  ``--retrieve-workers`` series at a time (one connection each), before the batch starts and before anything is
  written into ``DIR``: a bad server, a bad query, a query that matches nothing or a run in which no series could
  be retrieved ends with exit code 2 and one line, and ``DIR`` is left as it was. A single series that cannot be
  retrieved is a warning line and a failed study in the worklist (its error); the others go on, and a rerun
  retries it.
- **Send** (``--send``): after the batch, each study's ``mask.seg.dcm`` goes back to the same server (STOW-RS or
  C-STORE, one connection). ``DIR/<id>/seg_sent.json`` records what was sent where, so a rerun does not send
  the same SEG twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

#: --query keys (DICOM keywords, case-insensitive; a few short forms) -> app.pacs.Query fields
QUERY_KEYS = {
    "patientname": "patient_name",
    "patientid": "patient_id",
    "studydate": "study_date",
    "modality": "modality",
    "modalitiesinstudy": "modality",
    "accessionnumber": "accession",
    "accession": "accession",
    "studyinstanceuid": "study_uid",
    "studyuid": "study_uid",
}
SENT = "seg_sent.json"


def configure(p: argparse.ArgumentParser) -> None:
    from app.cli.pacs import add_cache_option, add_server_options

    g = p.add_argument_group("PACS (instead of INPUTS)")
    g.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --server: a study search key, e.g. StudyDate=20261201 (repeat for more; keys: PatientName, "
        "PatientID, StudyDate, Modality, AccessionNumber, StudyInstanceUID)",
    )
    g.add_argument("--limit", type=int, default=1000, help="with --server: at most this many studies (default 1000)")
    g.add_argument("--send", action="store_true", help="with --server: send each study's DICOM SEG back")
    g.add_argument(
        "--retrieve-workers",
        type=int,
        default=RETRIEVE_WORKERS,
        metavar="N",
        help=f"with --server: series retrieved at once, one connection each (default {RETRIEVE_WORKERS})",
    )
    add_server_options(p, required=False)
    add_cache_option(p)


def parse_query(items: list[str]):
    """``KEY=VALUE`` strings -> :class:`app.pacs.Query` (a one-line OptionError for anything else)."""
    from app.errors import OptionError
    from app.pacs import Query

    fields: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise OptionError(f"--query {item!r}: give KEY=VALUE, e.g. StudyDate=20261201")
        name = QUERY_KEYS.get(key.lower().replace("_", ""))
        if name is None:
            raise OptionError(
                f"--query {key}: unknown key (known: PatientName, PatientID, StudyDate, Modality, AccessionNumber, "
                "StudyInstanceUID)"
            )
        if name in fields:
            raise OptionError(f"--query {key}: given twice")
        if name == "study_date":
            value = _study_date(key, value)
        fields[name] = value
    return Query(**fields)


def _study_date(key: str, value: str) -> str:
    """A date (YYYYMMDD or YYYY-MM-DD) or a range YYYYMMDD-YYYYMMDD (either side open) as DICOM writes it."""
    import re

    from app.errors import OptionError
    from app.pacs.errors import PacsError
    from app.pacs.model import date_range

    v = value.replace(" ", "")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        v = v.replace("-", "")
    lo, dash, hi = v.partition("-")
    try:
        out = date_range(lo or None, hi or None) if dash else date_range(lo, lo)
    except PacsError:
        out = None
    if not out:
        raise OptionError(f"--query {key}={value}: use YYYYMMDD, YYYY-MM-DD or a range YYYYMMDD-YYYYMMDD")
    return out


def check(args: argparse.Namespace) -> None:
    """Option combinations, before any work (one readable line each)."""
    from app.errors import OptionError

    server = getattr(args, "server", None)
    if not server and (args.query or args.send):
        raise OptionError("--query and --send need --server (a PACS to search and send to)")
    if server and not args.query:
        raise OptionError("--server needs at least one --query KEY=VALUE (e.g. StudyDate=20261201)")
    if not server and not args.inputs:
        raise OptionError("no inputs: name study files, folders, globs or a list, or --server with --query")
    if args.limit < 1:
        raise OptionError("--limit must be >= 1")
    if getattr(args, "retrieve_workers", 1) < 1:
        raise OptionError("--retrieve-workers must be >= 1")
    if server:
        parse_query(args.query)


#: series retrieved at once (one connection each) unless --retrieve-workers says otherwise
RETRIEVE_WORKERS = 4


def retrieve(args: argparse.Namespace, log=None, before_series=None) -> list:
    """Search the server, retrieve every matching image series into the cache; the batch studies (StudyRefs).

    Series are fetched ``--retrieve-workers`` at a time, each on its own connection. A series that cannot be
    retrieved (the server lost it, refused it, broke off) does not stop the others: it becomes a study with its
    error (``StudyRef.error``), which the batch records as failed and a rerun retries. Writes nothing but the
    cache; raises PacsError/OptionError (one line) when the server or the query fails, or when no series at all
    could be retrieved. ``before_series(study, series)`` is called before each retrieval (tests)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from app.batch.inputs import refs_from_records
    from app.cli.pacs import cache_from_args, server_from_args
    from app.io.study import one_line
    from app.pacs import connect
    from app.pacs.base import retrieve_series
    from app.pacs.cache import safe_name
    from app.pacs.errors import PacsError

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    query = parse_query(args.query)
    cfg = server_from_args(args)
    cache = cache_from_args(args)
    args._pacs_config = cfg
    with connect(cfg) as c:
        studies = c.find_studies(query, limit=args.limit)
        if not studies:
            raise PacsError(f"the query {' '.join(args.query)} matches no studies on {cfg.label()}")
        wanted = query.modality.upper()
        plan = []
        for st in studies:
            series = [s for s in c.find_series(st.study_uid) if s.is_image]
            if wanted:
                series = [s for s in series if s.modality.upper() == wanted]
            plan += [(st, s) for s in series]
    if not plan:
        raise PacsError(
            f"the {len(studies)} stud{'y' if len(studies) == 1 else 'ies'} matching {' '.join(args.query)} on "
            f"{cfg.label()} hold no image series" + (f" of modality {wanted}" if wanted else "")
        )
    workers = max(1, min(int(getattr(args, "retrieve_workers", None) or RETRIEVE_WORKERS), len(plan)))
    log(
        f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}, {len(plan)} image series on {cfg.label()}"
        + (f" (retrieving {workers} at a time)" if workers > 1 else "")
    )
    stop = threading.Event()
    lock = threading.Lock()
    done = [0]
    tty = sys.stderr.isatty()

    def fetch(item):
        st, s = item
        try:
            if before_series is not None:
                before_series(st, s)
            with connect(cfg) as conn:
                info, folder = retrieve_series(conn, cache, st.study_uid, s.series_uid, cancel=stop.is_set)
            result = (info, folder, None)
        except PacsError as exc:
            result = (s, None, one_line(exc))
        except OSError as exc:  # a network or cache error of this series alone
            result = (s, None, f"{type(exc).__name__}: {one_line(exc)}")
        with lock:
            done[0] += 1
            if tty:
                sys.stderr.write(f"\rretrieving: {done[0]}/{len(plan)} series")
                sys.stderr.flush()
        return result

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retrieve")
    try:
        outcomes = list(pool.map(fetch, plan))
    except BaseException:  # Ctrl+C: the running retrievals stop at their next instance; nothing partial is kept
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if tty and done[0]:
            sys.stderr.write("\n")
    records, failed = [], []
    for (st, s), (info, folder, error) in zip(plan, outcomes, strict=True):
        number = info.number if info.number is not None else ""
        name = "_".join(x for x in (st.patient_id, st.study_date) if x) or "study"
        rec = {
            "kind": "dicom-series",
            "name": f"{name}_s{number}" if number != "" else name,
            "uid": info.series_uid,
            "desc": info.description,
            "study_uid": st.study_uid,
        }
        if error is None:
            rec.update(source=str(folder), files=tuple(sorted(str(f) for f in folder.iterdir() if f.suffix == ".dcm")))
        else:  # where the series would be in the cache: the same id as when it is retrieved on a rerun
            where = cache.studies_dir / safe_name(st.study_uid) / safe_name(s.series_uid)
            rec.update(source=str(where), files=(), error=f"retrieval failed: {error}")
            failed.append(rec)
        records.append(rec)
    if len(failed) == len(records):
        raise PacsError(f"none of the {len(records)} series could be retrieved; the first: {failed[0]['error']}")
    for rec in failed:
        log(f"warning: series {rec['uid']} ({rec['name']}): {rec['error']}; recorded as failed, the rest goes on")
    log(
        f"retrieved {len(records) - len(failed)} series into {cache.root}"
        + (f", {len(failed)} failed" if failed else "")
    )
    return refs_from_records(records)


def send(args: argparse.Namespace, results: list[dict], out: Path) -> int:
    """Send the SEGs of the ok studies not yet sent to this server; returns how many were sent."""
    from app.batch.task import write_json
    from app.cli.pacs import ProgressLine
    from app.pacs import connect
    from app.pacs.base import send_files

    cfg = args._pacs_config
    label = cfg.label()
    todo = []
    for r in results:
        seg = (r.get("outputs") or {}).get("seg") if r.get("status") == "ok" else None
        if not seg:
            continue
        path = out / r["id"] / seg
        sent = out / r["id"] / SENT
        try:
            record = json.loads(sent.read_text())
        except (OSError, ValueError):
            record = {}
        if record.get("server") == label and record.get("seg_sha1") == _sha1(path):
            continue
        todo.append((r["id"], path, sent))
    if not todo:
        print(f"no new DICOM SEGs to send to {label}", file=sys.stderr)
        return 0
    bar = ProgressLine("sending")
    with connect(cfg) as c:
        try:
            send_files(c, [p for _i, p, _s in todo], bar)
        finally:
            bar.end()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for _sid, path, sent in todo:
        write_json(sent, {"server": label, "seg": path.name, "seg_sha1": _sha1(path), "sent": stamp})
    print(f"sent {len(todo)} DICOM SEG(s) to {label}")
    return len(todo)


def _sha1(path: Path) -> str:
    import hashlib

    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError:
        return ""
