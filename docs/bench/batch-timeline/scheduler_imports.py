"""What a separately started Dask scheduler imports when it unpickles a batch task, and how long a plain first task
takes on a freshly started `dask scheduler` + 2 `dask worker` processes with the model already loaded on the
workers. Run from the repository root: .venv/bin/python docs/bench/batch-timeline/scheduler_imports.py

2026-12-06, before app.batch.task stopped importing torch through app.nets: first task 1.195 s (1.044, 1.248 in
two more runs), torch imported on the scheduler; after: 0.220 s (0.290, 0.282), torch not imported.
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from distributed import Client

from app.bench.batch_speed import _external_cluster, _load_model, _stop, bench_settings
from app.nets.card import read_card
from app.nets.zoo import resolve_model


def mods():
    import resource
    import sys

    r = {"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    return r | {
        m: m in sys.modules for m in ("torch", "app.batch.task", "app.bench.batch_speed", "app.nets.card", "numpy")
    }


def main():
    stem = resolve_model(None).resolve()
    settings, d = bench_settings(stem, read_card(stem))
    work = Path(tempfile.mkdtemp())
    addr, procs = _external_cluster(2, work)
    try:
        with Client(addr, timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
            from app.batch.task import ModelPreload

            c.register_plugin(ModelPreload(settings))
            c.run(_load_model, settings)
            print("scheduler before:", c.run_on_scheduler(mods))
            t = time.time()
            c.submit(_load_model, settings, pure=False).result()
            print(f"first task {time.time() - t:.3f}")
            print("scheduler after:", c.run_on_scheduler(mods))
    finally:
        _stop(procs)


if __name__ == "__main__":
    main()
