"""Where the solver's once-per-solve cost goes (dae card, batch 16 of the test split, 2 threads)."""

import time
from dataclasses import replace

import torch

from app.bench.speed import decoder_step_seconds, timed_solve
from app.core.detector import Detector
from app.data.splits import load_split
from app.nets.card import card_choices, card_solver
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model

torch.set_num_threads(2)
model, card = load_checkpoint(resolve_model("dae"), "cpu")
det = Detector.from_card(model, card, "cpu", batch_size=16)
x = torch.from_numpy(load_split("/work/cache/brain-proxy-v2z", "test").images[:16].copy())
eps = card_choices(card)["eps"]
opts = replace(card_solver(card), rtol=0.0, patience=10**6)
m = det.model


def best(f, n=5):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


with torch.no_grad():
    z0 = m.encode(x)
    enc = best(lambda: m.encode(x))
    dec32 = best(lambda: m.decode(z0))
dec_step = decoder_step_seconds(det, x, opts.precision)
res = {}
for k in (1, 2, 5, 12, 20):
    res[k] = min(timed_solve(det, x, eps, replace(opts, max_steps=k)).seconds for _ in range(3))
marg = (res[20] - res[5]) / 15
print(
    f"encode fp32 {enc:.3f} s; decode fp32 forward {dec32:.3f} s; decoder fwd+bwd ({opts.precision}) {dec_step:.3f} s"
)
print("solve seconds by steps:", {k: round(v, 3) for k, v in res.items()})
print(
    f"marginal step {marg:.3f} s ({marg / dec_step:.2f}x); fixed {res[20] - 20 * marg:.3f} s; "
    f"fixed minus encode and fp32 re-evaluation {res[20] - 20 * marg - enc - dec32:.3f} s"
)
print(
    f"12-step solve per step {res[12] / 12:.3f} s ({res[12] / 12 / dec_step:.2f}x); without the encode "
    f"{(res[12] - enc) / 12 / dec_step:.2f}x"
)
