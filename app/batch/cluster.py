"""Where a batch runs: a local Dask cluster (default) or an existing Dask scheduler.

Local: ``workers`` worker processes (each its own Python and torch, ``threads`` torch threads, one task at a
time), each under a nanny that restarts it if it dies. Remote: ``tcp://host:8786`` of a scheduler started
elsewhere (``dask scheduler`` plus ``dask worker`` processes, dask-jobqueue on HPC, dask-kubernetes, ...); its
workers must see the same paths for inputs, model and output folder (a shared filesystem), and have this package
installed; so must the scheduler, which unpickles the tasks it is sent (``app.batch.task`` imports no torch, so that
costs it a fraction of a second). Tasks and results travel between client and workers with Dask's serialisation
(pickle over the network between our own processes); no pickled *file* is ever read.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

from app.errors import OptionError


def default_workers(threads: int = 1) -> int:
    """One single-threaded worker process per core, at most 8 (each holds a model and a study in memory)."""
    return max(1, min(8, (os.cpu_count() or 1) // max(1, threads)))


@dataclass
class ClusterInfo:
    kind: str  # "local-processes", "local-threads" or "scheduler"
    address: str
    dashboard: str | None
    workers: int
    threads: int  # worker threads (concurrent tasks) in all


def open_client(
    scheduler: str | None = None,
    workers: int | None = None,
    *,
    processes: bool = True,
    dashboard: bool = True,
    wait_s: float = 60.0,
):
    """(client, cluster or None, ClusterInfo). The caller closes both."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{int(wait_s)}s")
        except (OSError, TimeoutError) as exc:
            raise OptionError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        try:
            client.wait_for_workers(1, timeout=wait_s)
        except TimeoutError:
            client.close()
            raise OptionError(f"--scheduler {scheduler}: no workers joined within {wait_s:.0f} s") from None
        cluster = None
        kind = "scheduler"
    else:
        n = workers or default_workers()
        if n < 1:
            raise OptionError("--workers must be >= 1")
        kw: dict = {"dashboard_address": ":8787" if dashboard else None, "silence_logs": logging.ERROR}
        with warnings.catch_warnings():
            # "Port 8787 is already in use ... hosting on port N": the link printed below names the real port
            warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
            if processes:
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, **kw)
                kind = "local-processes"
            else:
                cluster = LocalCluster(n_workers=1, threads_per_worker=n, processes=False, **kw)
                kind = "local-threads"
        client = Client(cluster)
    nthreads = client.nthreads()
    link = client.dashboard_link if dashboard or scheduler else None
    info = ClusterInfo(kind, str(client.scheduler.address), link, len(nthreads), int(sum(nthreads.values())))
    return client, cluster, info


def close(client, cluster) -> None:
    try:
        client.close()
    finally:
        if cluster is not None:
            cluster.close()
