"""The client side of ``batch``: plan (what is already done), submit one Dask task per study with a bounded number
in flight, collect, and write the worklist and the report.

- **Resumable, idempotent.** A study is skipped when its ``result.json`` says ``ok`` with the same settings key
  (model name, card and weights SHA-256, eps, tau, base-only, solver, step cap) and the same input fingerprint
  (paths, sizes and modification times), and its outputs exist. Anything else (changed settings, a changed input,
  a failure, a study interrupted before its ``result.json``) is redone. Every file is written atomically, so an
  interrupted run (Ctrl+C, a killed worker, a killed client) leaves only complete files.
- **Bounded memory.** At most ``window`` tasks are in flight (default: twice the cluster's worker threads); a
  new one is submitted as each finishes (``distributed.as_completed``), and a task returns only its small
  ``result.json`` dict, never arrays. The client holds one record per study, whatever the number of studies.
- **Readable while it runs.** Every :data:`INTERIM_S` seconds the worklist and the report are written again with
  the studies done so far (``n_pending`` says how many are still to do), so a department can open the most
  abnormal studies of the night before the batch ends; the viewer's worklist also picks up studies finished since.
- **Failures.** A study that cannot be read or analysed is recorded (``status: failed``, the error) by its task.
  A worker that dies mid-task is replaced (the nanny restarts it) and Dask reruns the task elsewhere, up to
  ``distributed.scheduler.allowed-failures`` times (3 by default); a task that keeps killing workers is recorded
  as failed by the client (``KilledWorker``). A study that never arrived (``StudyRef.error``: a PACS series that
  could not be retrieved) is recorded as failed by the client without a task -- unless an earlier run left an
  ``ok`` result for it with the same settings, which is kept (nothing already written is lost to a server
  outage).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.batch.inputs import StudyRef
from app.batch.task import MASK, RESULT, BatchSettings, process_study, raw_card, record_header, write_json
from app.viewer.worklist import read_result, write_worklist

#: seconds between the worklist and report written while a batch runs (``run_batch``'s ``interim_s``)
INTERIM_S = 60.0


def is_done(ref: StudyRef, settings: BatchSettings, out_dir: Path) -> dict | None:
    """The study's saved result when it can be reused as it is, else None."""
    folder = out_dir / ref.id
    r = read_result(folder / RESULT)
    if not r or r.get("status") != "ok":
        return None
    if r.get("settings") != settings.key() or r.get("input_fingerprint") != ref.fingerprint():
        return None
    outs = r.get("outputs") or {}
    need = [MASK] + (["difference", "pseudo_normal"] if settings.maps else [])
    if not (folder / MASK).is_file() or any(k not in outs for k in need[1:]):
        return None
    if any(not (folder / v).is_file() for v in outs.values()):
        return None
    return r


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    pending: int = 0
    wall_s: float = 0.0
    results: list[dict] = field(default_factory=list)
    worklist: tuple[Path, Path] | None = None
    report: Path | None = None
    #: what the model card says of how well this run's order triages (app.core.triage_evidence.TriageEvidence)
    triage: dict = field(default_factory=dict)

    @property
    def rate_per_min(self) -> float:
        return 60.0 * self.done / self.wall_s if self.wall_s > 0 else float("nan")


def triage_evidence_for(settings: BatchSettings) -> dict:
    """:func:`app.core.triage_evidence.triage_evidence` for the card and settings of a batch run (a card that cannot
    be read counts as one without measurements)."""
    from app.core.triage_evidence import Operator, triage_evidence

    card = raw_card(Path(settings.model).with_suffix(".json"))
    return triage_evidence(card, settings.weights_sha256, Operator.of(settings)).to_dict()


class BatchProgress:
    """Progress over studies with rate and ETA: a tqdm bar on a terminal, one line per study otherwise."""

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total, self.n, self.failed = total, 0, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and total and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="study", file=self.stream, dynamic_ncols=True, smoothing=0.1)

    def update(self, r: dict) -> None:
        self.n += 1
        self.failed += r.get("status") != "ok"
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"failed {self.failed}" if self.failed else "", refresh=False)
            self.bar.update(1)
            return
        el = time.perf_counter() - self.t0
        rate = self.n / el * 60 if el > 0 else 0.0
        eta = (self.total - self.n) / (self.n / el) if self.n and el > 0 else math.inf
        what = f"score {r['score']:.3f}" if r.get("status") == "ok" else f"FAILED: {r.get('error', '')}"
        eta_s = "?" if not math.isfinite(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
        print(
            f"[{self.n}/{self.total}] {r.get('id')}: {what} ({rate:.2f} studies/min, ETA {eta_s})",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _killed_record(ref: StudyRef, settings: BatchSettings, exc: BaseException) -> dict:
    from app.io.study import one_line

    return {**record_header(ref, settings), "status": "failed",
            "error": f"task lost: {type(exc).__name__}: {one_line(exc)}"}  # fmt: skip


def _unavailable_record(ref: StudyRef, settings: BatchSettings) -> dict:
    return {**record_header(ref, settings), "status": "failed", "error": ref.error}


def run_batch(
    refs: list[StudyRef],
    settings: BatchSettings,
    out_dir: str | Path,
    client,
    *,
    window: int | None = None,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
    task: Callable = process_study,
    meta: dict | None = None,
    stream=None,
    interim_s: float | None = INTERIM_S,
) -> BatchSummary:
    """Process ``refs`` on ``client``'s cluster into ``out_dir`` (see the module docstring). While it runs, the
    worklist and the report are written again every ``interim_s`` seconds (None: only at the end), so that a reader
    can open the most abnormal studies before the last one is done."""
    from distributed import as_completed

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = BatchSummary()
    by_id: dict[str, dict] = {}
    todo: list[StudyRef] = []
    kept = 0
    for ref in refs:
        if ref.error:  # never arrived: no task; an earlier complete result for it stands
            prior = read_result(out / ref.id / RESULT)
            if prior and prior.get("status") == "ok" and prior.get("settings") == settings.key():
                by_id[ref.id] = prior
                kept += 1
                summary.skipped += 1
                continue
            r = _unavailable_record(ref, settings)
            (out / ref.id).mkdir(parents=True, exist_ok=True)
            write_json(out / ref.id / RESULT, r)
            by_id[ref.id] = r
            summary.failed += 1
            continue
        r = is_done(ref, settings, out)
        if r is not None:
            by_id[ref.id] = r
            summary.skipped += 1
        else:
            todo.append(ref)
    stream = stream or sys.stderr
    if summary.skipped:
        print(f"{summary.skipped} of {len(refs)} studies already done with these settings: skipped", file=stream)
    if kept:
        print(f"{kept} of them not retrieved this time: their earlier results are kept", file=stream)
    nthreads = sum(client.nthreads().values()) or 1
    window = max(1, int(window or 2 * nthreads))
    bar = BatchProgress(len(todo), stream, progress)
    pending = iter(todo)
    inflight: dict = {}  # future key -> (future, study)
    ac = as_completed()

    def submit_next() -> bool:
        ref = next(pending, None)
        if ref is None:
            return False
        fut = client.submit(task, ref, settings, str(out), key=f"matchgen-study-{ref.id}", pure=False)
        inflight[fut.key] = (fut, ref)
        ac.add(fut)
        return True

    summary.triage = triage_evidence_for(settings)
    base_meta = {
        "model": settings.model_name,
        "base_only": settings.base_only,
        "eps": settings.eps,
        "tau": settings.tau,
        "report_above": settings.report_above,
        "triage_evidence": summary.triage,
        **(meta or {}),
    }

    def done_so_far() -> list[dict]:
        return [by_id[r.id] for r in refs if r.id in by_id]

    def lists_meta(pending: int) -> dict:
        # rewrite_s: how often the lists are written again while studies are pending (report.html reloads itself)
        return {**base_meta, "n_inputs": len(refs), "n_pending": pending, "rewrite_s": interim_s}

    def write_lists(results: list[dict]) -> None:
        if not results:
            return
        meta_all = lists_meta(len(refs) - len(results))
        summary.worklist = write_worklist(out, results, meta_all)
        from app.batch.report import write_report

        summary.report = write_report(out, results, meta_all)

    last_write = time.perf_counter()
    try:
        for _ in range(window):
            if not submit_next():
                break
        for fut in ac:
            ref = inflight.pop(fut.key)[1]
            try:
                r = fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, lost data, a task that could not even start
                r = _killed_record(ref, settings, exc)
                (out / ref.id).mkdir(parents=True, exist_ok=True)
                write_json(out / ref.id / RESULT, r)
            fut.release()
            by_id[ref.id] = r
            if r.get("status") == "ok":
                summary.done += 1
            else:
                summary.failed += 1
            bar.update(r)
            if on_result is not None:
                on_result(r)
            submit_next()
            if interim_s is not None and inflight and time.perf_counter() - last_write >= interim_s:
                write_lists(done_so_far())  # a batch still running: what is done so far, ranked
                last_write = time.perf_counter()
    finally:
        bar.close()
        if inflight:  # interrupted: nothing of these was written but complete files; they are redone next time
            try:
                client.cancel([f for f, _ in inflight.values()])
            except Exception:  # noqa: BLE001 - the cluster may already be gone (that is why we are here)
                pass
        summary.wall_s = time.perf_counter() - t0
        summary.results = done_so_far()
        summary.pending = len(refs) - len(summary.results)
        write_lists(summary.results)
        write_json(
            out / "batch.json",
            {
                **lists_meta(summary.pending),
                "settings": settings.to_dict(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "wall_s": round(summary.wall_s, 3),
                "done": summary.done,
                "skipped": summary.skipped,
                "failed": summary.failed,
                "complete": summary.pending == 0,
            },
        )
    return summary


def load_results(out_dir: str | Path, ids: list[str]) -> list[dict]:
    out = Path(out_dir)
    res = []
    for i in ids:
        r = read_result(out / i / RESULT)
        if r is not None:
            res.append(r)
    return res
