"""``bench batch``: throughput of ``batch`` on this machine -- studies per minute with 1 and 2 local worker
processes, the per-study overhead beyond the solver, the scaling efficiency, and the same run on a Dask scheduler
and workers started as separate processes (``dask scheduler`` + ``dask worker``) on localhost.

The studies are small synthetic head phantoms (``app.data.phantom``), resampled to the model's input size like any
study, so the solver's work per slice is that of a real study; only the number of slices differs. Each
configuration runs the same studies into a fresh folder; the clock runs from the first submission to the last
result (cluster start-up is reported apart), with the model already loaded on every worker (``ModelPreload``).
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


def _one(name, refs, settings, out, client, workers, startup_s, log) -> dict:
    from app.batch.runner import run_batch
    from app.batch.task import ModelPreload

    client.register_plugin(ModelPreload(settings))
    client.wait_for_workers(workers, timeout=120)
    summary = run_batch(refs, settings, out, client, progress=False, stream=open(os.devnull, "w"))  # noqa: SIM115
    res = [r for r in summary.results if r.get("status") == "ok"]
    if len(res) != len(refs):
        raise RuntimeError(
            f"{name}: {len(refs) - len(res)} studies failed: {[r.get('error') for r in summary.results]}"
        )
    total = np.array([r["timings"]["total_s"] for r in res])
    solve = np.array([r["timings"]["solve_s"] for r in res])
    slices = np.array([r["slices_analysed"] for r in res])
    wall = summary.wall_s
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
        "scheduling_overhead_s": round(float(wall * workers / len(res) - total.mean()), 3),
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
    model: str | None, n_studies: int = 8, slices: int = 16, max_steps: int | None = None, log=print, mg: bool = False
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
    return "\n".join(lines) + "\n"
