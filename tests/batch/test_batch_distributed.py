"""``batch`` on real worker processes: a LocalCluster of processes with a worker killed mid-task (Dask retries the
task on the restarted worker; the model is loaded once per worker process), and a separately started
``dask scheduler`` + ``dask worker`` reached with ``--scheduler``."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import batch_helpers
import cloudpickle
import pytest
from batch_helpers import crash_once, free_port

from app.cli import main

STEPS = ["--max-steps", "10"]


def _settings(studies, model):
    from app.cli import build_parser
    from app.cli.batch import make_settings

    args = build_parser().parse_args(["batch", str(studies), "--model", str(model), "--out", "x", *STEPS])
    return make_settings(args)


def test_processes_killed_worker_is_retried_and_model_loaded_once_per_worker(tmp_path, studies, tiny_model):
    from distributed import Client, LocalCluster

    from app.batch.inputs import expand_inputs
    from app.batch.runner import run_batch
    from app.batch.task import ModelPreload

    (studies / "corrupt.nii.gz").unlink()
    settings = _settings(studies, tiny_model)
    refs = expand_inputs([str(studies)])
    marker = tmp_path / "killed-pid"
    task = functools.partial(crash_once, victim="b", marker=str(marker))
    cloudpickle.register_pickle_by_value(batch_helpers)  # the worker processes cannot import the tests
    try:
        with (
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cl,
            Client(cl) as client,
        ):
            client.register_plugin(ModelPreload(settings))
            summary = run_batch(refs, settings, tmp_path / "out", client, window=1, progress=False, task=task)
    finally:
        cloudpickle.unregister_pickle_by_value(batch_helpers)
    assert marker.exists(), "the worker was never killed"
    killed_pid = int(marker.read_text())
    assert (summary.done, summary.failed) == (3, 0)
    res = {r["id"]: r for r in summary.results}
    assert res["b"]["status"] == "ok" and res["b"]["pid"] != killed_pid  # rerun on the replacement worker
    assert {r["pid"] for r in res.values()} <= {killed_pid, res["b"]["pid"]}
    assert all(r["pid"] != os.getpid() for r in res.values())  # really in worker processes
    assert all(r["model_loads_in_process"] == 1 for r in res.values())  # once per worker, not per study


@pytest.fixture
def external_cluster(tmp_path):
    """``dask scheduler`` and one ``dask worker`` started as separate processes on 127.0.0.1."""
    exe = Path(sys.executable).parent / "dask"
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [str(exe), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "scheduler.log", "w"),
            env=env,
            cwd=tmp_path,
        )
    ]
    try:
        procs.append(
            subprocess.Popen(
                [
                    str(exe),
                    "worker",
                    addr,
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--no-dashboard",
                    "--name",
                    "external-worker",
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / "worker.log", "w"),
                env=env,
                cwd=tmp_path,
            )
        )
        yield addr
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_separately_started_scheduler(tmp_path, studies, tiny_model, external_cluster, capsys):
    """``batch --scheduler`` on a separately started scheduler and worker. The scheduler unpickles the tasks it is
    sent (so it needs this package installed), which imports ``app.batch.task``: that import must not pull in torch
    (about a second on the scheduler before the first study starts)."""
    from distributed import Client

    out = tmp_path / "out"
    code = main(
        ["batch", str(studies), "--model", str(tiny_model), "--out", str(out), "--scheduler", external_cluster, *STEPS]
    )
    _, err = capsys.readouterr()
    assert code == 1, err  # the corrupt study
    assert f"Dask scheduler at {external_cluster}: 1 worker(s)" in err
    wl = json.loads((out / "worklist.json").read_text())
    assert sorted(e["id"] for e in wl["studies"]) == ["a", "b", "c"] and wl["n_failed"] == 1
    for sid in "abc":
        r = json.loads((out / sid / "result.json").read_text())
        assert r["worker"].startswith("tcp://127.0.0.1:") and r["pid"] != os.getpid()

    this = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(this)  # the scheduler cannot import the tests
    try:
        with Client(external_cluster, timeout="30s") as client:
            seen = client.run_on_scheduler(_scheduler_modules)
    finally:
        cloudpickle.unregister_pickle_by_value(this)
    assert seen == {"app.batch.task": True, "torch": False}


def _scheduler_modules():
    import sys

    return {m: m in sys.modules for m in ("app.batch.task", "torch")}
