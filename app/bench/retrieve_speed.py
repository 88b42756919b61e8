"""``bench retrieve``: is retrieving the series of a ``batch --server`` run with ``--retrieve-workers N`` (N
connections at once) faster than with one? Measured against a real Orthanc started here.

The bench starts its own Orthanc (:class:`app.pacs.orthanc.LocalOrthanc`: localhost, free ports, basic auth, a
temporary storage folder), uploads ``series`` synthetic MR series (one per study, ``slices`` uncompressed 16-bit
slices of ``size`` x ``size``, written by ``app.data.head_ct.write_dicom_series``), then times the batch's own
retrieval step (``app.cli.batch_pacs.retrieve``, passed in as ``retrieve``: the study query, the series queries and
the concurrent retrieval into the cache, exactly what ``batch --server ... --retrieve-workers N`` runs before the
batch) for each protocol (DICOMweb: QIDO-RS + WADO-RS; DIMSE: C-FIND + C-GET) and worker count, each run into a
new, empty cache folder that is removed afterwards. The runs are interleaved (repeat 1 of every configuration,
then repeat 2, ...) so a change in the machine's load touches all configurations alike; the best of the repeats
counts; one untimed retrieval of one series per protocol comes first (imports, first connections). The serial
query part (one study search, one series search per study) is timed apart as ``query_s``. Each run also records
the CPU time of this process (all its threads: the client) and of the Orthanc process (from ``/proc``), to tell
whether a configuration waits or computes.

Orthanc is stopped at the end, also on an error or Ctrl+C (and, on Linux, if this process is killed).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

PATIENT_ID = "matchgen-bench-retrieve"
STUDY_DATE = "20250101"
PROTOCOLS = ("dicomweb", "dimse")
MB = 1e6  # MB/s in the report are 10^6 bytes per second


def make_series(folder: Path, n: int, slices: int, size: int, seed: int = 0) -> list[list[Path]]:
    """``n`` MR series of ``slices`` slices of ``size`` x ``size`` (uint16, 1 mm x 1 mm x 2 mm), one per study."""
    from app.data.head_ct import write_dicom_series

    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(
        np.linspace(-1, 1, size), np.linspace(-1, 1, size), np.linspace(-1, 1, slices), indexing="ij", sparse=True
    )
    base = 800.0 * np.exp(-2.0 * (x**2 + y**2 + z**2))
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    out = []
    for i in range(n):
        vol = base + rng.normal(0.0, 20.0, base.shape)
        out.append(
            write_dicom_series(
                np.clip(vol, 0, None), affine, folder / f"series{i:03d}", description=f"bench series {i}",
                modality="MR", patient=("Bench^Retrieve", PATIENT_ID),
                extra={"StudyDate": STUDY_DATE, "StudyDescription": f"bench study {i}", "SeriesNumber": 1},
            )
        )  # fmt: skip
    return out


def _cache_content(root: Path) -> tuple[int, int]:
    """(DICOM files, bytes) of the complete series in a retrieval cache folder (``studies/``)."""
    files = nbytes = 0
    studies = root / "studies"
    if studies.is_dir():
        for f in studies.rglob("*.dcm"):
            files += 1
            nbytes += f.stat().st_size
    return files, nbytes


def _entries(root: Path) -> int:
    """Everything under a folder (0 when it does not exist)."""
    return sum(1 for _ in root.rglob("*")) if root.exists() else 0


def _query_s(cfg) -> float:
    from app.pacs import Query, connect

    t = time.perf_counter()
    with connect(cfg) as c:
        for st in c.find_studies(Query(patient_id=PATIENT_ID), limit=1000):
            c.find_series(st.study_uid)
    return time.perf_counter() - t


def run_retrieve_bench(
    retrieve: Callable,
    n_series: int = 16,
    slices: int = 60,
    size: int = 256,
    workers: tuple[int, ...] = (1, 2, 4, 8),
    protocols: tuple[str, ...] = PROTOCOLS,
    repeats: int = 2,
    log=print,
    work: Path | None = None,
) -> dict:
    """Start Orthanc, upload the series, time ``retrieve(args, log=...)`` (``app.cli.batch_pacs.retrieve``) for
    every protocol x worker count x repeat; the result as a JSON-ready dict (see :func:`markdown`)."""
    from app.pacs import parse_server
    from app.pacs.errors import PacsError
    from app.pacs.orthanc import LocalOrthanc, missing

    workers = tuple(sorted(set(int(w) for w in workers)))
    if 1 not in workers or min(workers) < 1:
        raise ValueError("workers must include 1 (the speed-ups are relative to one worker)")
    if set(protocols) - set(PROTOCOLS) or not protocols:
        raise ValueError(f"protocols: some of {PROTOCOLS}")
    problem = missing()
    if problem:
        raise PacsError(problem)
    load_start = [round(v, 2) for v in os.getloadavg()]
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="matchgen-bench-retrieve-")) if own_work else Path(work)
    user, password = "bench", secrets.token_hex(12)
    server_threads = max(4, max(workers))  # Orthanc 1.10's default DicomThreadsCount is 4
    settings = {
        "Name": "MatchGenBenchOrthanc",
        "DicomThreadsCount": server_threads,
        "HttpThreadsCount": max(50, 2 * max(workers)),
        "MaximumStorageCacheSize": 0,  # every retrieval reads the stored files, as a PACS without a warm cache
    }
    orthanc = LocalOrthanc(
        work / "orthanc", users={user: password}, settings=settings, host="127.0.0.1", die_with_parent=True
    )
    runs = []
    try:
        with orthanc:
            version = orthanc.get("/system").get("Version", "?")
            log(f"Orthanc {version} on {orthanc.rest} and {orthanc.dimse}")
            t = time.perf_counter()
            series = make_series(work / "series", n_series, slices, size)
            write_s = time.perf_counter() - t
            t = time.perf_counter()
            uploaded = orthanc.upload([p for s in series for p in s])
            upload_s = time.perf_counter() - t
            stats = orthanc.get("/statistics")
            if int(stats["CountSeries"]) != n_series or int(stats["CountInstances"]) != n_series * slices:
                raise PacsError(f"Orthanc holds {stats['CountSeries']} series / {stats['CountInstances']} instances "
                                f"after the upload, not {n_series} / {n_series * slices}")  # fmt: skip
            log(f"{n_series} series x {slices} slices ({uploaded / MB:.1f} MB) written in {write_s:.1f} s, "
                f"uploaded in {upload_s:.1f} s")  # fmt: skip
            servers = {
                "dicomweb": f"http://{user}:{password}@127.0.0.1:{orthanc.http_port}/dicom-web",
                "dimse": orthanc.dimse,
            }
            warm = f"StudyInstanceUID={_study_uid(series[0][0])}"
            for proto in protocols:  # one series each, not timed: imports and first connections are not counted
                _run(retrieve, servers[proto], proto, 1, -1, work / "cache", 1, lambda m: None, query=warm)
            query_s = {p: [] for p in protocols}
            for rep in range(repeats):
                for proto in protocols:
                    query_s[proto].append(_query_s(parse_server(servers[proto], timeout=60)))
                    for w in workers:
                        runs.append(_run(retrieve, servers[proto], proto, w, rep, work / "cache", n_series, log,
                                         server_cpu=orthanc.cpu_seconds))  # fmt: skip
            load_end = [round(v, 2) for v in os.getloadavg()]
            shutil.rmtree(work / "series", ignore_errors=True)
    finally:
        orthanc.stop()
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    res = {
        "orthanc_version": version,
        "orthanc_settings": {k: v for k, v in settings.items() if k != "Name"},
        "series": n_series,
        "slices_per_series": slices,
        "size": size,
        "instances": n_series * slices,
        "uploaded_bytes": uploaded,
        "write_s": round(write_s, 2),
        "upload_s": round(upload_s, 2),
        "workers": list(workers),
        "protocols": list(protocols),
        "repeats": repeats,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_start,
        "load_average_at_end": load_end,
        "query_s": {p: round(min(v), 4) for p, v in query_s.items()},
        "runs": runs,
    }
    res["rows"] = summarise(res)
    return res


def _study_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _run(retrieve, server, proto, w, rep, cache_root: Path, n_series: int, log, query=f"PatientID={PATIENT_ID}",
         server_cpu=lambda: None):
    from app.pacs.errors import PacsError

    cache = cache_root / f"{proto}-w{w}-r{rep}"
    before = _entries(cache)
    args = argparse.Namespace(
        server=server, query=[query], limit=1000, retrieve_workers=w, cache=str(cache),
        user=None, ask_password=False, ca_file=None, timeout=60.0, calling_aet=None,
    )  # fmt: skip
    lines: list[str] = []
    cpu0, srv0 = time.process_time(), server_cpu()
    t = time.perf_counter()
    refs = retrieve(args, log=lines.append)
    seconds = time.perf_counter() - t
    cpu1, srv1 = time.process_time(), server_cpu()
    failed = [r.error for r in refs if r.error]
    files, nbytes = _cache_content(cache)
    shutil.rmtree(cache, ignore_errors=True)
    run = {
        "protocol": proto,
        "workers": w,
        "repeat": rep,
        "seconds": round(seconds, 4),
        "client_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_s": round(srv1 - srv0, 3) if srv0 is not None and srv1 is not None else None,
        "series_retrieved": len(refs) - len(failed),
        "files": files,
        "bytes": nbytes,
        "ref_files": sum(len(r.files) for r in refs),
        "cache_entries_before": before,
        "cache_entries_after_cleanup": _entries(cache),
    }
    log(f"{proto} {w} worker(s), repeat {rep + 1}: {seconds:.2f} s, {run['series_retrieved']} series, "
        f"{nbytes / MB:.1f} MB")  # fmt: skip
    if failed or run["series_retrieved"] != n_series:
        raise PacsError(f"{proto} with {w} worker(s): {len(failed)} of {len(refs)} series failed ({failed[:1]}); "
                        f"expected {n_series}: {' | '.join(lines[-3:])}")  # fmt: skip
    return run


def summarise(res: dict) -> list[dict]:
    """One row per protocol and worker count: the best of the repeats, series/s, MB/s and the speed-up over one
    worker, computed from the rounded seconds reported (so speedup == best_s(1) / best_s(N) as printed)."""
    rows = []
    for proto in res["protocols"]:
        best = {}
        for w in res["workers"]:
            mine = [r for r in res["runs"] if r["protocol"] == proto and r["workers"] == w]
            top = min(mine, key=lambda r: r["seconds"])
            best[w] = top["seconds"]
            nbytes = top["bytes"]
            rows.append({
                "protocol": proto,
                "workers": w,
                "effective_workers": min(w, res["series"]),
                "best_s": best[w],
                "runs_s": [r["seconds"] for r in mine],
                "series_per_s": round(res["series"] / best[w], 3),
                "mb_per_s": round(nbytes / MB / best[w], 2),
                "bytes": nbytes,
                "speedup_vs_1": round(best[1] / best[w], 3),
                "client_cpu_s": top["client_cpu_s"],
                "server_cpu_s": top["server_cpu_s"],
            })  # fmt: skip
    return rows


PROTOCOL_NAMES = {"dicomweb": "DICOMweb (QIDO-RS + WADO-RS)", "dimse": "DIMSE (C-FIND + C-GET)"}


def markdown(res: dict) -> str:
    server = ", ".join(f"{k} {v}" for k, v in res["orthanc_settings"].items())
    lines = [
        f"Orthanc {res['orthanc_version']} on localhost ({server}), "
        f"{res['series']} MR series (one per study) of {res['slices_per_series']} slices {res['size']} x {res['size']} "
        f"(16-bit, uncompressed; {res['uploaded_bytes'] / MB:.1f} MB uploaded), each run from an empty cache, best "
        f"of {res['repeats']}; {res['cpu_count']} CPUs, load average {res['load_average_at_start']} at the start, "
        f"{res['load_average_at_end']} at the end",
        "",
        "| protocol | --retrieve-workers | best (s) | runs (s) | series/s | MB/s | speed-up vs 1 | client CPU (s) |"
        " Orthanc CPU (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in res["rows"]:
        lines.append(
            f"| {PROTOCOL_NAMES.get(r['protocol'], r['protocol'])} | {r['workers']} | {r['best_s']:.2f} | "
            f"{', '.join(f'{s:.2f}' for s in r['runs_s'])} | {r['series_per_s']:.2f} | {r['mb_per_s']:.1f} | "
            f"{r['speedup_vs_1']:.2f}x | {r['client_cpu_s']:.2f} | "
            + (f"{r['server_cpu_s']:.2f} |" if r["server_cpu_s"] is not None else "- |")
        )
    q = ", ".join(f"{PROTOCOL_NAMES.get(p, p)} {s:.2f} s" for p, s in res["query_s"].items())
    lines += [
        "",
        f"serial query part (1 study search + {res['series']} series searches, timed apart): {q}; CPU: of the "
        "best run, this process's (all its threads) and the Orthanc process's, from the OS",
    ]
    return "\n".join(lines) + "\n"
