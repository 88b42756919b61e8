"""``bench batch``: throughput of ``batch`` on this machine -- studies per minute with 1 and 2 local worker
processes, the per-study overhead beyond the solver, the scaling efficiency, and the same run on a Dask scheduler
and workers started as separate processes (``dask scheduler`` + ``dask worker``) on localhost.

The studies are small synthetic head phantoms (``app.data.phantom``), resampled to the model's input size like any
study, so the solver's work per slice is that of a real study; only the number of slices differs. Each
configuration runs the same studies into a fresh folder; the clock runs from the first submission to the last
result (cluster start-up is reported apart), with the model already loaded on every worker (``ModelPreload``).

Where the time beyond the solver goes is read from each task's own clock (:func:`task_timeline`), not inferred
from the wall clock: the idle time between one task's end and the next task's start on the same worker (the
scheduling), the time every worker waits at the end for the last study (the imbalance), and how much longer a task
takes when both workers compute at once (the contention for the cores, their caches and memory). On this 2-core
machine the last is what separates 2 workers from twice 1 (docs/batch.md, "Throughput"); with few studies the
first study on each worker (its first imports and allocations) weighs more, so the default runs 24 studies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_studies(folder: Path, n: int, slices: int, size: int = 64, seed: int = 0) -> list[Path]:
    import nibabel as nib

    from app.data.phantom import brain_phantom

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        vol, _ = brain_phantom((size, size, slices), seed=seed + i)
        p = folder / f"phantom{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(vol.astype(np.int16), np.diag([2.0, 2.0, 3.0, 1.0])), p)
        paths.append(p)
    return paths


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _external_cluster(workers: int, log_dir: Path):
    exe = [sys.executable, "-m", "dask"]  # the `dask` command of this interpreter, wherever it is installed
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sched = subprocess.Popen(
        [*exe, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=open(log_dir / "scheduler.log", "w"),  # noqa: SIM115 - kept open for the process's life
        env=env,
    )
    work = subprocess.Popen(
        [*exe, "worker", addr, "--nworkers", str(workers), "--nthreads", "1", "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=open(log_dir / "worker.log", "w"),  # noqa: SIM115
        env=env,
    )
    return addr, [work, sched]


def _stop(procs) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def timed_study(ref, settings, out_dir: str) -> dict:
    """The batch task (:func:`app.batch.task.process_study`) with its start and end on the worker's clock
    (``bench_clock``, seconds since the epoch; the bench's workers share the machine's clock). Dask's own task
    stream shifts each worker's times by a delay it re-estimates at every heartbeat, tens of milliseconds on a busy
    machine: more than the gaps measured here."""
    from app.batch.task import process_study

    t0 = time.time()
    r = process_study(ref, settings, out_dir)
    return {**r, "bench_clock": [t0, time.time()]}


def task_timeline(results: list[dict], wall_s: float) -> dict:
    """What the tasks' own clocks (``bench_clock`` of :func:`timed_study`, per ``worker``) say: seconds per task
    (mean, the first task on each worker and the rest), the idle time between consecutive tasks on one worker
    (mean, max; the scheduling: result back, next task in), the time from the first task's start to the last one's
    end (span), the end imbalance (the mean time a worker waits between its own last task and the span's end) and
    what of the wall clock lies outside the span (planning, the first submission, the last result's return)."""
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if "bench_clock" in r:
            by_worker.setdefault(str(r["worker"]), []).append(tuple(float(v) for v in r["bench_clock"]))
    if not by_worker:
        raise ValueError("no result carries its task's clock")
    for v in by_worker.values():
        v.sort()
    runs = [b - a for v in by_worker.values() for a, b in v]
    first = [v[0][1] - v[0][0] for v in by_worker.values()]
    rest = [b - a for v in by_worker.values() for a, b in v[1:]]
    gaps = [v[i + 1][0] - v[i][1] for v in by_worker.values() for i in range(len(v) - 1)]
    start = min(v[0][0] for v in by_worker.values())
    end = max(v[-1][1] for v in by_worker.values())
    return {
        "tasks": len(runs),
        "workers": len(by_worker),
        "compute_s_mean": float(np.mean(runs)),
        "first_task_s_mean": float(np.mean(first)),
        "later_task_s_mean": float(np.mean(rest)) if rest else None,
        "idle_between_tasks_ms_mean": 1000 * float(np.mean(gaps)) if gaps else None,
        "idle_between_tasks_ms_max": 1000 * float(np.max(gaps)) if gaps else None,
        "span_s": end - start,
        "end_imbalance_s": float(np.mean([end - v[-1][1] for v in by_worker.values()])),
        "outside_span_s": wall_s - (end - start),
    }


def _load_model(settings) -> int:
    """On a worker: the batch's model, loaded unless it already is (:func:`app.batch.task.get_detector`)."""
    from app.batch.task import detector_loads, get_detector

    get_detector(settings)
    return detector_loads()


def _one(name, refs, settings, out, client, workers, startup_s, log) -> dict:
    from app.batch.runner import run_batch
    from app.batch.task import ModelPreload

    client.register_plugin(ModelPreload(settings))
    client.wait_for_workers(workers, timeout=120)
    client.run(_load_model, settings)  # the clock starts with the model loaded on every worker, whatever the plugin did
    devnull = open(os.devnull, "w")  # noqa: SIM115
    summary = run_batch(refs, settings, out, client, progress=False, stream=devnull, task=timed_study)
    res = [r for r in summary.results if r.get("status") == "ok"]
    if len(res) != len(refs):
        raise RuntimeError(
            f"{name}: {len(refs) - len(res)} studies failed: {[r.get('error') for r in summary.results]}"
        )
    total = np.array([r["timings"]["total_s"] for r in res])
    solve = np.array([r["timings"]["solve_s"] for r in res])
    slices = np.array([r["slices_analysed"] for r in res])
    wall = summary.wall_s
    tl = task_timeline(res, wall)
    row = {
        "config": name,
        "workers": workers,
        "studies": len(res),
        "startup_s": round(startup_s, 2),
        "wall_s": round(wall, 2),
        "studies_per_min": round(60 * len(res) / wall, 3),
        "task_s_mean": round(float(total.mean()), 3),
        "solve_s_mean": round(float(solve.mean()), 3),
        "in_task_overhead_s": round(float((total - solve).mean()), 3),
        # what the wall clock holds beyond the tasks, per study and worker (imbalance, scheduling, planning)
        "scheduling_overhead_s": round(float(wall * workers / len(res) - total.mean()), 3),
        "timeline": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in tl.items()},
        "solve_s_per_slice": round(float(solve.sum() / slices.sum()), 4),
        "slices_per_study": float(slices.mean()),
        "workers_seen": sorted({r["worker"] for r in res}),
    }
    log(f"{name}: {row['studies_per_min']} studies/min (wall {wall:.1f} s, startup {startup_s:.1f} s)")
    return row


def bench_settings(stem: Path, card: dict, mg: bool = False, max_steps: int | None = None):
    """(settings, detection): the BatchSettings of the detection a plain ``batch`` runs with this card
    (:func:`app.nets.card.card_batch_detection`; ``mg``: the one ``batch --mg`` runs), one torch thread per worker
    as ``batch`` starts them, and that detection in words."""
    from app.batch.task import BatchSettings
    from app.nets.card import card_batch_detection

    d = card_batch_detection(card, mg=mg)
    settings = BatchSettings.for_checkpoint(
        stem,
        d["eps"],
        d["tau"],
        base_only=d["base_only"],
        max_steps=max_steps,
        device="cpu",
        threads=1,
        report_above=d["report_above"],
    )
    return settings, d


def run_batch_bench(
    model: str | None, n_studies: int = 24, slices: int = 16, max_steps: int | None = None, log=print, mg: bool = False
):  # fmt: skip
    """The three configurations on the same phantom studies, running what a plain ``batch`` runs with the model's
    card (``mg``: what ``batch --mg`` runs)."""
    from distributed import Client, LocalCluster

    from app.batch.inputs import expand_inputs
    from app.nets.card import read_card
    from app.nets.zoo import resolve_model

    stem = resolve_model(model).resolve()
    card = read_card(stem)
    settings, detection = bench_settings(stem, card, mg, max_steps)
    eps, tau = settings.eps, settings.tau
    work = Path(tempfile.mkdtemp(prefix="matchgen-bench-batch-"))
    rows = []
    try:
        refs = expand_inputs([str(p) for p in make_studies(work / "studies", n_studies, slices)])
        for w in (1, 2):
            t = time.perf_counter()
            with (
                LocalCluster(
                    n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
                ) as cl,
                Client(cl) as client,
            ):
                rows.append(_one(f"local {w} worker(s)", refs, settings, work / f"out{w}", client, w,
                                 time.perf_counter() - t, log))  # fmt: skip
        t = time.perf_counter()
        addr, procs = _external_cluster(2, work)
        try:
            with Client(addr, timeout="60s") as client:
                client.wait_for_workers(2, timeout=120)
                rows.append(_one("dask scheduler + dask worker (2 procs)", refs, settings, work / "out-ext", client,
                                 2, time.perf_counter() - t, log))  # fmt: skip
        finally:
            _stop(procs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one, two = rows[0], rows[1]
    speedup = two["studies_per_min"] / one["studies_per_min"]
    for r in rows[1:]:  # how much longer a task computes beside another worker than alone
        r["contention_x"] = round(r["timeline"]["compute_s_mean"] / one["timeline"]["compute_s_mean"], 3)
    return {
        "model": stem.name,
        "detection": detection["label"] + (" (batch --mg)" if mg else " (what a plain batch runs)"),
        "base_only": settings.base_only,
        "eps": eps,
        "tau": tau,
        "report_above": settings.report_above,
        "studies": n_studies,
        "slices_per_study": slices,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "rows": rows,
        "speedup_1_to_2": round(speedup, 3),
        "scaling_efficiency": round(speedup / 2, 3),
    }


def markdown(res: dict) -> str:
    what = res.get("detection") or f"eps {res['eps']:g}, tau {res['tau']:g}"  # older results name no detection
    lines = [
        f"model {res['model']}: {what}; "
        f"{res['studies']} phantom studies of "
        f"{res['slices_per_study']} slices, {res['cpu_count']} CPUs, load average at start "
        f"{res['load_average_at_start']}",
        "",
        "| configuration | studies/min | wall (s) | start-up (s) | task (s) | solver (s) | in-task overhead (s) |"
        " scheduling overhead (s/study) | solver s/slice |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['config']} | {r['studies_per_min']:.2f} | {r['wall_s']:.1f} | {r['startup_s']:.1f} | "
            f"{r['task_s_mean']:.2f} | {r['solve_s_mean']:.2f} | {r['in_task_overhead_s']:.3f} | "
            f"{r['scheduling_overhead_s']:.3f} | {r['solve_s_per_slice']:.3f} |"
        )
    lines += ["", f"speed-up 1 -> 2 workers: {res['speedup_1_to_2']:.2f}x (efficiency {res['scaling_efficiency']:.0%})"]
    if all("timeline" in r for r in res["rows"]):  # results written before the tasks' clocks were read have none
        lines += [
            "",
            "Where the wall clock goes beyond one worker's tasks (each task's own clock): the scheduling overhead "
            "above is wall x workers / studies - task; the tasks' clocks split it.",
            "",
            "| configuration | task computing (s): first on a worker / later | idle between tasks on a worker (ms):"
            " mean / max | end imbalance (s) | outside the tasks' span (s) | task time beside another worker |",
            "|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            t = r["timeline"]
            later = "-" if t["later_task_s_mean"] is None else f"{t['later_task_s_mean']:.2f}"
            idle = (
                "-" if t["idle_between_tasks_ms_mean"] is None
                else f"{t['idle_between_tasks_ms_mean']:.1f} / {t['idle_between_tasks_ms_max']:.1f}"
            )  # fmt: skip
            cont = f"{r['contention_x']:.2f}x" if "contention_x" in r else "(alone)"
            lines.append(
                f"| {r['config']} | {t['first_task_s_mean']:.2f} / {later} | {idle} | {t['end_imbalance_s']:.2f} | "
                f"{t['outside_span_s']:.2f} | {cont} |"
            )
    return "\n".join(lines) + "\n"
