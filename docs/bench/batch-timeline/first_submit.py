"""When does the first task start on a separately started `dask scheduler` + `dask worker` pair? Two batches of the
same 8 phantom studies (16 slices) one after the other on the same pair, the model loaded on both workers first;
printed: seconds from run_batch's call to the first task's start, and from the last task's end to its return.

    .venv/bin/python docs/bench/batch-timeline/first_submit.py

2026-12-06: rep 0: before first task 1.337 s, after last 0.015 s, wall 5.34; rep 1: before first task 0.008 s,
after last 0.011 s, wall 3.46 (docs/batch.md, "Throughput").
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from distributed import Client  # noqa: E402

from app.batch.inputs import expand_inputs  # noqa: E402
from app.batch.runner import run_batch  # noqa: E402
from app.batch.task import ModelPreload  # noqa: E402
from app.bench.batch_speed import _external_cluster, _load_model, _stop, bench_settings, make_studies, timed_study  # noqa: E402
from app.nets.card import read_card  # noqa: E402
from app.nets.zoo import resolve_model  # noqa: E402


def main():
    stem = resolve_model(None).resolve()
    settings, d = bench_settings(stem, read_card(stem))
    work = Path(tempfile.mkdtemp(prefix="ext-"))
    refs = expand_inputs([str(p) for p in make_studies(work / "studies", 8, 16)])
    addr, procs = _external_cluster(2, work)
    try:
        with Client(addr, timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
            c.register_plugin(ModelPreload(settings))
            c.run(_load_model, settings)  # as bench batch does: loaded on both workers before the clock
            for rep in range(2):
                t0 = time.time()
                s = run_batch(
                    refs, settings, work / f"o{rep}", c, progress=False, stream=open(os.devnull, "w"), task=timed_study
                )
                t1 = time.time()
                st = min(r["bench_clock"][0] for r in s.results)
                en = max(r["bench_clock"][1] for r in s.results)
                print(
                    f"rep {rep}: before first task {st - t0:.3f} s, after last {t1 - en:.3f} s, wall {s.wall_s:.2f}",
                    flush=True,
                )
    finally:
        _stop(procs)


if __name__ == "__main__":
    main()
