"""The dae's solve of a 9-slice window (the viewer's first slice) in bfloat16 and in float32 search steps, back to
back on this CPU: the card's solver (12 SPG steps, eps scaled by brain area) on the demo's slices 69-77.

    python docs/bench/cpu-precision/window_time.py [--model dae] [--threads 2] [--repeats 1]

Prints the CPU's bfloat16 support as torch sees it, the seconds per window of each precision (alternated, after one
float32 warm-up), and how far the float32 search's maps and masks lie from the bfloat16 one's.
"""

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.core.ensemble import load_detector  # noqa: E402
from app.nets.zoo import resolve_model  # noqa: E402
from app.viewer.loading import open_study  # noqa: E402
from app.viewer.slices import ModelInput  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dae")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"mkldnn bf16 supported: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}"
    )
    det, model, card = load_detector(resolve_model(args.model), "cpu")
    study = open_study("resources/demo/demo_t1.nii.gz").with_model(ModelInput.of(model))
    x = torch.from_numpy(np.ascontiguousarray(study.model_slices(list(range(69, 78)))))
    chosen = card.get("chosen_volume") or card["chosen"]
    eps = float(chosen["eps"])
    # the card's solver in either precision (the detector itself would run float32 where bfloat16 is not native)
    bf16 = dataclasses.replace(det.solver, precision="bf16")
    fp32 = dataclasses.replace(det.solver, precision="fp32")
    print(f"{args.model}: card solver {bf16.method}, {bf16.max_steps} steps, eps {eps}, window {tuple(x.shape)}")
    det.solver = fp32
    det.run(x, eps)  # warm-up (the first run allocates)
    out, times = {}, {"bf16": [], "fp32": []}
    for _ in range(args.repeats):  # alternated, so that a slower spell of the machine hits both
        for name, opts in (("fp32", fp32), ("bf16", bf16)):
            det.solver = opts
            t = time.perf_counter()
            out[name] = det.run(x, eps)
            times[name].append(time.perf_counter() - t)
            print(f"{name}: {times[name][-1]:.2f} s for the window", flush=True)
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.2f} s per window over {len(ts)} runs")
    a, b = out["bf16"], out["fp32"]
    tau = float(chosen["tau"])
    ma, mb = a.d > tau, b.d > tau
    print(
        f"D: max |fp32 - bf16| {np.abs(a.d - b.d).max():.4f}, mean {np.abs(a.d - b.d).mean():.5f}; "
        f"D > tau {tau:g}: {int(ma.sum())} vs {int(mb.sum())} px, {int((ma != mb).sum())} differ; "
        f"Dice between them {2 * (ma & mb).sum() / max(1, ma.sum() + mb.sum()):.3f}"
    )


if __name__ == "__main__":
    main()
