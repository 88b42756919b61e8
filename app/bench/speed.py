"""``bench speed``: is MatchGen fast enough to use interactively? Every figure is measured in one run on one
machine, so ratios compare like with like.

Figures (see ``docs/benchmarks.md`` for the goals):

* ``slice_converge_s``: median wall time of encode + MatchGen on one 128x128 slice, to convergence or the card's
  step budget (default model, the solver its card applies, one slice at a time).
* ``slice_window_s``: with a z window in the card (D averaged over neighbouring slices), the viewer's first request
  on a slice solves the window's slices together: median wall time of encode + MatchGen on that many slices in one
  batch, at :data:`WINDOW_SLICE_MM` spacing; ``slice_window_next_s`` the next slice's request (the session keeps
  what it solved, so only the one slice the earlier window lacked is solved: ``slice_converge_s``'s one-slice
  solve). None without a window. ``slice_window_base_s``: the same window through the base model alone (eps 0,
  the detector's ``run``: encode, decode, maps), which the viewer shows first, marked "+MG running...", while
  MatchGen solves (no goal: what a reader waits before seeing any map of a new slice).
* ``slice_scroll_s``: in the viewer's controller (:class:`app.viewer.controller.ViewerController`, real worker
  threads) on the bundled demo study at the slice it opens on, +MG at the card's eps: the reader looks at a slice's
  final result for :data:`SCROLL_DWELL_S` and presses Up, twice; the longer of the two times from the key to the
  next slice's final result, with the neighbouring slices solved ahead as the viewer does (``slice_scroll_cold_s``:
  the same without, as a request on a new slice costs).
* ``volume_s_per_slice``: wall time per slice of :meth:`Detector.run` on >= 100 slices in batches.
* ``speedup_vs_reference``: the paper-faithful reference (one image at a time, penalty method, Adam lr 1e-3, float32,
  the stock memory layout) *run to convergence* (:data:`REFERENCE`: the paper's stall rule stops Adam about 5 %
  above the optimum on a non-linear decoder, which would flatter any faster solver), compared with the fastest
  solver *at equal final loss*: per slice the target is the worse of the two final losses, the reference's time
  is when its best loss first reached that target (from a per-step trace), the fast solver's is its whole
  batched run. Each solver's gap to the best loss known for the slice (the lowest of the reference, the fast
  solver and a long float32 SPG run) is reported beside it, and "same final loss" checks that the fast solver
  ends no worse than the converged reference by more than :data:`SAME_LOSS_RTOL` (relative) on every slice.
* ``flops_fraction``: decoder FLOPs executed in the batched solve per second, divided by the measured matmul rate
  of the same precision on the same threads (FLOPs counted by ``torch.utils.flop_counter``).
* ``tau_update_ms``, ``gui_max_stall_ms``: see :mod:`app.bench.gui_latency`.
* ``peak_rss_mb``: the maximum resident memory of a ``detect`` subprocess on a 256x256x155 volume.
* ``preprocess_s_per_volume``: N4 and atlas brain extraction (:mod:`app.data.brain`, what ``prepare_study`` runs on
  a skull-on MRI), each timed on its own, on Colin27's ``ch2`` (a real 1 mm 181x217x181 head from the sources
  cache) with ITK on the bench's thread count; the extraction's Dice against ``ch2bet`` beside it
  (:func:`preprocess_speed`).

Every "fast" figure times the detector ``detect`` and the viewer build from the model card
(:func:`applied_detector`: the card's solver and step budget, memory layout and post-processing); the ablation
changes one of these choices at a time (BatchNorm folding, the other memory layout).

"Before" (the stock solver: penalty, float32, batched, no layout change) is measured beside "after" in the same
run, together with the Dice on the given slices, so a speed gain that costs quality shows.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.core.detector import Detector
from app.core.matchgen import FAST, SolverOptions, optimize
from app.core.metrics import evaluate
from app.nets.card import card_choices, choice_sources
from app.solver_options import SOLVE_BATCH

#: the fast solver's loss may exceed the reference's by at most this fraction on any slice ("same final loss")
SAME_LOSS_RTOL = 1e-3

#: the paper's solver (penalty, Adam lr 1e-3, float32) run to convergence: the stall rule waits 250 steps for a
#: 1e-6 relative improvement (the shipped default, 25 steps and 1e-4, stops early), at most 20000 steps
REFERENCE = SolverOptions(max_steps=20000, patience=250, rtol=1e-6)
#: a long float32 SPG run for the best loss known per slice (the yardstick of both solvers' gaps)
BEST_KNOWN = SolverOptions(method="spg", precision="fp32", max_steps=5000, patience=250, rtol=1e-7)

GOALS: dict[str, tuple[str, float]] = {
    "tau_update_ms": ("<=", 16),
    "slice_converge_s": ("<=", 1.0),
    "slice_window_s": ("<=", 1.0),  # what the viewer waits for on a new slice with the card's z window
    "slice_scroll_s": ("<=", 0.1),  # the next slice after a look at this one: at once (under 100 ms) to a reader
    "volume_s_per_slice": ("<=", 0.2),
    "speedup_vs_reference": (">=", 10),
    "flops_fraction": (">=", 0.6),
    "gui_max_stall_ms": ("<=", 50),
    "peak_rss_mb": ("<=", 2000),
    "preprocess_s_per_volume": ("<=", 5.0),  # "within a few seconds per volume on 2 cores" (issue 11)
}

#: how long the reader looks at a slice before pressing Up in ``slice_scroll_s``
SCROLL_DWELL_S = 2.0

#: slice spacing at which ``slice_window_s`` counts the window's slices: the benchmark subject's and the demo's
WINDOW_SLICE_MM = 2.0

#: the skull-on head and its skull-stripped brain (app.data.sources package mricron-data)
CH2 = "usr/share/mricron/templates/ch2.nii.gz"
CH2BET = "usr/share/mricron/templates/ch2bet.nii.gz"

Log = Callable[[str], None]
#: what the report says when the paper-solver comparisons were not run
SKIPPED = (
    "not run (--no-reference): the paper's solver run to convergence takes tens of minutes per slice on large decoders"
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- hardware reference ----------------------------------------------------------------------------------------
def matmul_rate(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", sizes=(1024, 2048)) -> float:
    """The best measured square-matmul rate in FLOP/s (best of several repeats per size)."""
    dev = torch.device(device)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=dev).to(dtype)
        b = torch.randn(n, n, device=dev).to(dtype)
        for _ in range(2):
            a @ b
        _sync(dev)
        for _ in range(5):
            t = time.perf_counter()
            a @ b
            _sync(dev)
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def decoder_flops(model, x1: torch.Tensor) -> tuple[float, float]:
    """FLOPs of one image's decoder forward, and of forward + backward to z (what a solver step costs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        z = model.encode(x1)
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            model.decode(z)
    fwd = fc.get_total_flops()
    zz = z.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as fc:
        (model.decode(zz) - x1).abs().mean().backward()
    return float(fwd), float(fc.get_total_flops())


def decoder_step(detector: Detector, x: torch.Tensor, precision: str) -> Callable[[], None]:
    """One solver step's decoder work alone on the batch ``x``: forward in the search precision and backward to z,
    with none of the solver's bookkeeping around it."""
    with torch.no_grad():
        z0 = detector.model.encode(x)
    dt = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        z = z0.clone().requires_grad_(True)
        with torch.autocast(device_type=detector.device.type, dtype=dt, enabled=dt is not None):
            s = detector.model.decode(z)
        torch.autograd.grad((s.float() - x).abs().flatten(1).mean(1).sum(), z)

    return step


def best_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: torch.device | None = None) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (allocator, oneDNN primitive
    cache), synchronising ``device`` around each timed call."""
    dev = device or torch.device("cpu")
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t)
    return best


def decoder_step_seconds(detector: Detector, x: torch.Tensor, precision: str, repeats: int = 10) -> float:
    """Seconds of :func:`decoder_step`: what the solve would cost per step with no bookkeeping. Best of
    ``repeats``."""
    return best_seconds(decoder_step(detector, x, precision), repeats, warmup=2, device=detector.device)


def decoder_profile(detector: Detector, x: torch.Tensor, precision: str, steps: int = 5, top: int = 8) -> list[dict]:
    """Where a decoder step's time goes: the ``top`` operators (by self time on the device that computes -- the
    CPU, or the GPU's kernel time -- grouped by input shapes) of :func:`decoder_step` over ``steps`` steps, from
    ``torch.profiler``; ms per step each."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = detector.device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    step = decoder_step(detector, x, precision)
    step()
    _sync(detector.device)
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            step()
        _sync(detector.device)

    def self_us(e) -> float:
        return float(getattr(e, "self_device_time_total", 0.0) if on_gpu else e.self_cpu_time_total)

    rows = sorted(prof.key_averages(group_by_input_shape=True), key=self_us, reverse=True)
    total = sum(self_us(e) for e in rows) or 1.0
    return [
        {
            "op": e.key,
            "input_shapes": str(e.input_shapes)[:120],
            "ms_per_step": round(self_us(e) / 1e3 / steps, 3),
            "share": round(self_us(e) / total, 3),
        }
        for e in rows[:top]
    ]


class CountingDecode:
    """Wraps a decoder and counts decoded images with and without a backward pass."""

    def __init__(self, decode):
        self.decode = decode
        self.with_grad = 0
        self.no_grad = 0

    def __call__(self, z):
        if torch.is_grad_enabled() and z.requires_grad:
            self.with_grad += z.shape[0]
        else:
            self.no_grad += z.shape[0]
        return self.decode(z)


# --- solver timings --------------------------------------------------------------------------------------------
@dataclass
class SolveTiming:
    seconds: float
    steps: np.ndarray
    loss: np.ndarray
    s: np.ndarray
    decoded_grad: int
    decoded_nograd: int


def window_base_seconds(detector, images: np.ndarray, n_window: int, n: int) -> float:
    """``slice_window_base_s``: the median over ``n`` windows of ``n_window`` slices of the detector's (or the
    ensemble's) ``run`` at eps 0 -- the base map the viewer shows first on a new slice."""
    times = []
    for i in range(n):
        _sync(detector.device)
        t = time.perf_counter()
        detector.run(images[i : i + n_window], 0.0)
        _sync(detector.device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timed_solve(detector: Detector, x: torch.Tensor, eps: float, options: SolverOptions) -> SolveTiming:
    """encode + optimize on one batch, timed, with the decoder's work counted."""
    dec = CountingDecode(detector.model.decode)
    _sync(detector.device)
    t = time.perf_counter()
    with torch.no_grad():
        z0 = detector.model.encode(x)
    r = optimize(dec, x, z0, eps, options=options)
    _sync(detector.device)
    sec = time.perf_counter() - t
    return SolveTiming(sec, r.steps.cpu().numpy(), r.loss.cpu().numpy(), r.s.cpu().numpy(), dec.with_grad, dec.no_grad)


@dataclass
class LossTrace:
    """One slice's best feasible loss after every solver step, with the wall time since the solve began."""

    seconds: np.ndarray  # (steps,)
    loss: np.ndarray  # (steps,)
    final_loss: float  # the solver's returned loss (float32 re-evaluated)
    total_seconds: float

    def seconds_to(self, target: float) -> float:
        """Seconds until the best loss first reached ``target``: :func:`time_to_loss`."""
        return time_to_loss(self.seconds, self.loss, target, self.final_loss, self.total_seconds)


def time_to_loss(seconds: np.ndarray, loss: np.ndarray, target: float, final: float, total: float) -> float:
    """When a solver's best loss first got to ``target`` or below: the time of the first traced step at or under
    it; if only the final (float32 re-evaluated) loss is, the whole run; ``inf`` if it never got there."""
    hit = np.flatnonzero(np.asarray(loss) <= target)
    if hit.size:
        return float(np.asarray(seconds)[hit[0]])
    return float(total) if final <= target else math.inf


def traced_solve(detector: Detector, x1: torch.Tensor, eps: float, options: SolverOptions) -> LossTrace:
    """encode + optimize on one slice with a per-step callback recording (time, best loss)."""
    times, losses = [], []
    _sync(detector.device)
    t0 = time.perf_counter()

    def cb(p) -> None:
        times.append(time.perf_counter() - t0)
        losses.append(float(p.loss[0]))

    with torch.no_grad():
        z0 = detector.model.encode(x1)
    r = optimize(detector.model.decode, x1, z0, eps, options=replace(options, callback_every=1), callback=cb)
    _sync(detector.device)
    total = time.perf_counter() - t0
    return LossTrace(np.asarray(times), np.asarray(losses), float(r.loss[0]), total)


def one_at_a_time(detector: Detector, x: torch.Tensor, eps: float, options: SolverOptions) -> list[SolveTiming]:
    return [timed_solve(detector, x[i : i + 1], eps, options) for i in range(x.shape[0])]


def batched(detector: Detector, x: torch.Tensor, eps: float, options: SolverOptions) -> list[SolveTiming]:
    """The slices through :meth:`Detector.run` (the batch loop ``detect`` and the viewer use) with ``options``,
    timed, the decoder's work counted. Every slice is solved (no empty-slice skipping), so solvers compare on the
    same work."""
    import copy

    det = copy.copy(detector)  # same model and device; only the options differ
    det.solver = options
    model = detector.model
    counter = CountingDecode(model.decode)
    model.decode = counter  # an instance attribute shadows the method while the run lasts
    try:
        _sync(detector.device)
        t = time.perf_counter()
        out = det.run(x, eps, skip_empty=False)
        _sync(detector.device)
        sec = time.perf_counter() - t
    finally:
        del model.decode
    return [SolveTiming(sec, out.steps, out.loss, out.s, counter.with_grad, counter.no_grad)]


def _total(ts: list[SolveTiming]) -> dict[str, Any]:
    return {
        "seconds": float(sum(t.seconds for t in ts)),
        "steps": np.concatenate([t.steps for t in ts]),
        "loss": np.concatenate([t.loss for t in ts]),
        "s": np.concatenate([t.s for t in ts]),
        "decoded_grad": sum(t.decoded_grad for t in ts),
        "decoded_nograd": sum(t.decoded_nograd for t in ts),
    }


# --- slices ----------------------------------------------------------------------------------------------------
def phantom_slices(n: int, size: int = 128, seed: int = 0, lesions: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Brain-like synthetic slices (an ellipse with smooth texture) with round lesions brighter or darker than
    the tissue, for timing when no benchmark data is given. Deterministic."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    imgs = np.zeros((n, 1, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        a, b = 0.30 + 0.08 * np.sin(i / 9), 0.38 + 0.06 * np.cos(i / 11)
        r = (xx / a) ** 2 + (yy / b) ** 2
        brain = r < 1
        tex = ndimage.gaussian_filter(rng.standard_normal((size, size)), 3) * 3
        img = np.where(brain, 0.55 + 0.15 * np.cos(r * 10) + 0.08 * tex + 0.2 * (r < 0.15), 0.0)
        if lesions and i % 4 != 3:
            k = rng.integers(size // 32, size // 8)
            c = rng.integers(int(size * 0.35), int(size * 0.65), 2)
            m = ((np.arange(size)[:, None] - c[0]) ** 2 + (np.arange(size)[None, :] - c[1]) ** 2 < k * k) & brain
            img = np.where(m, img + rng.choice([-0.3, 0.3]), img)
            masks[i] = m
        imgs[i, 0] = np.clip(img, 0, 1)
    return imgs, masks


def load_slices(data: str | os.PathLike | None, n: int, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """n test slices of a benchmark directory (abnormal ones first, at evenly spaced positions), or phantoms."""
    if data is None:
        imgs, masks = phantom_slices(n, size)
        return imgs, masks, f"synthetic phantom ({n} slices, {size}x{size})"
    from app.data import load_split

    ss = load_split(data, "test")
    if ss.images.shape[-1] != size:
        from app.errors import OptionError

        raise OptionError(f"{data} has {ss.images.shape[-1]}px slices; the model expects {size}")
    masks = ss.masks if ss.masks is not None else np.zeros((len(ss), size, size), np.uint8)
    abn = np.flatnonzero(masks.reshape(len(ss), -1).any(axis=1))
    rest = np.setdiff1d(np.arange(len(ss)), abn)
    order = np.concatenate([abn, rest])
    if n < order.size:
        order = np.sort(order[np.round(np.linspace(0, order.size - 1, n)).astype(int)])
    while order.size < n:  # a small split: repeat it
        order = np.concatenate([order, order])[:n]
    return ss.images[order].astype(np.float32), masks[order], f"{data} test split ({n} slices)"


# --- peak memory of detect -------------------------------------------------------------------------------------
def write_phantom_volume(path: Path, shape=(256, 256, 155), seed: int = 0, mask_path: Path | None = None) -> Path:
    """A float32 NIfTI phantom (default 256x256x155, BraTS-sized; 1 mm, RAS) and optionally its lesion mask."""
    import nibabel as nib

    imgs, masks = phantom_slices(shape[2], shape[0], seed)
    vol = np.ascontiguousarray(np.transpose(imgs[:, 0], (1, 2, 0)) * 1000.0, dtype=np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    if mask_path is not None:
        m = np.ascontiguousarray(np.transpose(masks, (1, 2, 0)), dtype=np.uint8)
        nib.save(nib.Nifti1Image(m, np.eye(4)), str(mask_path))
    return path


_RSS_CHILD = r"""
import resource, subprocess, sys, time
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sec = time.perf_counter() - t
kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"RSS {kb} {r.returncode} {sec}")
sys.stderr.write(r.stderr[-2000:])
"""


def peak_rss_detect(model: str, device: str, workdir: Path, extra: list[str] | None = None) -> dict[str, Any]:
    """Run ``python main.py detect`` on the phantom volume in a fresh process tree and report the maximum
    resident set size (``resource.getrusage(RUSAGE_CHILDREN)`` of a small wrapper, so nothing else counts)."""
    vol = write_phantom_volume(workdir / "phantom_256x256x155.nii.gz")
    out = workdir / "phantom_mask.nii.gz"
    # the installed package's command line (``python -m app.cli``), not a path into a source tree
    cmd = [sys.executable, "-m", "app.cli", "detect", str(vol), "--model", model, "--out", str(out), "--device", device]
    cmd += extra or []
    r = subprocess.run([sys.executable, "-c", _RSS_CHILD, *cmd], capture_output=True, text=True)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RSS ")), None)
    if line is None:
        return {"peak_rss_mb": None, "error": (r.stderr or r.stdout)[-500:]}
    kb, rc, sec = line.split()[1:]
    res: dict[str, Any] = {
        "peak_rss_mb": round(int(kb) / 1024, 1),
        "detect_exit_code": int(rc),
        "detect_seconds": round(float(sec), 2),
        "command": " ".join(["matchgen", *cmd[3:]]),
    }
    if int(rc) != 0:
        res["error"] = r.stderr[-500:]
    return res


# --- the whole benchmark ---------------------------------------------------------------------------------------
def _dice_mean(s: np.ndarray, x: np.ndarray, masks: np.ndarray, detector: Detector, tau: float) -> float:
    d, _ = detector.maps(torch.from_numpy(x), torch.from_numpy(s))
    return evaluate(list(d), list(masks.astype(bool)), tau).dice_mean


def layout_name(channels_last: bool) -> str:
    return "channels_last" if channels_last else "stock"


def applied_detector(model, card: dict[str, Any], dev, batch_size: int) -> tuple[Detector, str]:
    """The detector ``detect`` and the viewer build from ``card`` (:meth:`Detector.from_card`: the solver its
    eps/tau were chosen with, its memory layout and post-processing), so every "fast" figure times the operator
    users run. A card calibrated without the fast solver (or not at all) gets :data:`FAST` in channels_last
    instead: the project's fastest solver, not the paper's reference, is what these figures are about. The
    second value says which."""
    from app.core.detector import PostProcessing
    from app.nets.card import card_postprocess, card_solver

    if card_solver(card).method != "penalty":  # without a calibration card_solver is the paper's (penalty)
        return Detector.from_card(model, card, dev, batch_size=batch_size), "model card"
    post = PostProcessing(**card_postprocess(card))
    det = Detector(model, dev, solver=FAST, post=post, batch_size=batch_size, channels_last=True)
    return det, "FAST in channels_last (the card has no fast-solver calibration)"


def model_eps_tau(card: dict[str, Any]) -> tuple[float, float, str]:
    """The eps and tau a model's card chose on validation, else the fallbacks every reader uses
    (:func:`app.nets.card.card_choices`, the same as ``detect`` and the viewer)."""
    ch, src = card_choices(card), choice_sources(card)
    if src["eps"] == "card" and src["tau"] == "card":
        return ch["eps"], ch["tau"], "chosen on validation (model card)"
    return ch["eps"], ch["tau"], "; ".join(s for s in (src["eps"], src["tau"]) if s != "card")


def _reference_comparison(res, det_ref, det_fast, xr, eps, ref_opts, fast_opts, best_known_options, log) -> None:
    """speedup_vs_reference: the paper's solver run to convergence one slice at a time against the fast solver,
    compared at equal final loss, with both gaps to the best loss known per slice (into ``res``)."""
    n_reference = len(xr)
    log(f"speedup_vs_reference: reference to convergence on {n_reference} slices one at a time ...")
    ref_tr = [traced_solve(det_ref, xr[i : i + 1], eps, ref_opts) for i in range(n_reference)]
    fast_tr = [traced_solve(det_fast, xr[i : i + 1], eps, fast_opts) for i in range(n_reference)]
    fast_one = _total(one_at_a_time(det_fast, xr, eps, fast_opts))
    fast_bat = _total(batched(det_fast, xr, eps, fast_opts))
    log("best known loss per slice: a long float32 SPG run ...")
    long_run = _total(one_at_a_time(det_ref, xr, eps, best_known_options or BEST_KNOWN))
    ref_loss = np.array([tr.final_loss for tr in ref_tr])
    best = np.minimum.reduce([ref_loss, fast_bat["loss"], fast_one["loss"], long_run["loss"]])
    # equal final loss: each slice's target is the worse final loss of the two; the fast batched run ends at or
    # below it by construction, so its whole run time is what the fast solver needs to get there
    target = np.maximum(ref_loss, np.maximum(fast_bat["loss"], fast_one["loss"]))
    t_ref = np.array([tr.seconds_to(float(target[i])) for i, tr in enumerate(ref_tr)])
    t_fast_one = np.array([tr.seconds_to(float(target[i])) for i, tr in enumerate(fast_tr)])
    rel = (fast_bat["loss"] - ref_loss) / np.maximum(ref_loss, 1e-12)

    def gap(loss):
        return ((np.asarray(loss) - best) / np.maximum(best, 1e-12)).tolist()

    res["best_known_loss"] = best.tolist()
    res["best_known_solver"] = (best_known_options or BEST_KNOWN).__dict__
    res["equal_loss_target"] = target.tolist()
    res["reference"] = {
        "seconds_per_slice": float(sum(tr.total_seconds for tr in ref_tr)) / n_reference,
        "seconds_to_target": t_ref.tolist(),
        "steps": [int(tr.loss.size) for tr in ref_tr],
        "loss": ref_loss.tolist(),
        "gap_to_best": gap(ref_loss),
        "converged": bool((np.asarray(gap(ref_loss)) <= SAME_LOSS_RTOL).all()),
        "stopped_at_step_cap": bool(any(tr.loss.size >= ref_opts.max_steps for tr in ref_tr)),
    }
    res["fast_one_at_a_time"] = {
        "seconds_per_slice": fast_one["seconds"] / n_reference,
        "seconds_to_target": t_fast_one.tolist(),
        "steps": fast_one["steps"].tolist(),
        "loss": fast_one["loss"].tolist(),
        "gap_to_best": gap(fast_one["loss"]),
    }
    res["fast_batched"] = {
        "seconds_per_slice": fast_bat["seconds"] / n_reference,
        "steps": fast_bat["steps"].tolist(),
        "loss": fast_bat["loss"].tolist(),
        "gap_to_best": gap(fast_bat["loss"]),
    }
    res["speedup_vs_reference"] = float(t_ref.sum()) / fast_bat["seconds"]
    res["speedup_one_at_a_time"] = float(t_ref.sum()) / float(t_fast_one.sum())
    res["speedup_compared_at"] = "equal final loss (per slice the worse of the two final losses)"
    res["loss_rel_diff_max"] = float(rel.max())
    res["same_final_loss"] = bool((rel <= SAME_LOSS_RTOL).all())


def _before_after(det_ref, det_fast, x, images, masks, eps, tau, ref_opts, fast_opts) -> dict[str, Any]:
    """The stock solver (penalty, float32, batched) against the fast one on the same slices, with the Dice."""
    n_ba = len(x)
    before = _total(batched(det_ref, x, eps, ref_opts))
    after = _total(batched(det_fast, x, eps, fast_opts))
    return {
        "slices": n_ba,
        "before_s_per_slice": before["seconds"] / n_ba,
        "after_s_per_slice": after["seconds"] / n_ba,
        "before_steps_mean": float(before["steps"].mean()),
        "after_steps_mean": float(after["steps"].mean()),
        "before_loss_mean": float(before["loss"].mean()),
        "after_loss_mean": float(after["loss"].mean()),
        "before_dice": _dice_mean(before["s"], images, masks, det_ref, tau),
        "after_dice": _dice_mean(after["s"], images, masks, det_fast, tau),
    }


def run_speed(
    model_name: str | None = None,
    device: str = "cpu",
    data: str | None = None,
    *,
    n_converge: int = 5,
    n_volume: int = 128,
    n_reference: int = 3,
    batch_size: int = SOLVE_BATCH,
    gui: bool = True,
    rss: bool = True,
    workdir: Path | None = None,
    reference_options: SolverOptions | None = None,
    best_known_options: SolverOptions | None = None,
    profile_decoder: bool = True,
    ablation: bool = True,
    compile_decoder: bool = False,
    preprocess: bool = False,  # the CLI turns it on (--no-preprocess: off); tests of the solver figures skip it
    reference: bool = True,  # the paper-solver comparisons (speedup_vs_reference, before/after); --no-reference
    log: Log = print,
) -> dict[str, Any]:
    from app.core.device import resolve_device
    from app.core.ensemble import is_ensemble_file
    from app.nets.checkpoint import load_checkpoint
    from app.nets.zoo import DEFAULT_MODEL, resolve_model

    dev = resolve_device(device)
    name = model_name or DEFAULT_MODEL
    load_before = os.getloadavg()
    stem = resolve_model(name)
    if is_ensemble_file(stem.with_suffix(".json")):
        return ensemble_speed(stem, dev, data, n_converge=n_converge, n_volume=n_volume, batch_size=batch_size, gui=gui,
                              rss=rss, preprocess=preprocess, workdir=workdir, log=log)  # fmt: skip
    model_plain, card = load_checkpoint(stem, dev)
    model_fast, _ = load_checkpoint(stem, dev)
    size = model_plain.config.image_size
    eps, tau, eps_rule = model_eps_tau(card)
    ref_opts = reference_options or REFERENCE  # the paper's: penalty, Adam lr 1e-3, float32, to convergence
    # "fast" is what detect and the viewer apply: the card's solver, memory layout and post-processing
    det_fast, fast_from = applied_detector(model_fast, card, dev, batch_size)
    fast_opts = det_fast.solver
    det_ref = Detector(  # the same post-processing, so the before/after Dice compares the solvers alone
        model_plain, dev, solver=ref_opts, post=det_fast.post, batch_size=batch_size, channels_last=False,
        fold_batchnorm=False,
    )  # fmt: skip

    n_total = max(n_volume, n_converge + det_fast.post.z_slices(WINDOW_SLICE_MM), n_reference)
    images, masks, source = load_slices(data, n_total, size)
    x_all = torch.from_numpy(images).to(dev)
    res: dict[str, Any] = {
        "model": stem.name,
        "model_family": model_plain.config.family,
        "eps": eps,
        "tau": tau,
        "eps_rule": eps_rule,
        "slices": source,
        **_environment(dev),
        "solver_fast": fast_opts.__dict__,
        "solver_fast_from": fast_from,
        "layout": layout_name(det_fast.channels_last),
        "solver_reference": ref_opts.__dict__,
        "same_loss_rtol": SAME_LOSS_RTOL,
    }

    # warm up both paths (first calls allocate and pick kernels)
    timed_solve(det_fast, x_all[:batch_size], eps, replace(fast_opts, max_steps=3))
    if reference:
        timed_solve(det_ref, x_all[:1], eps, replace(ref_opts, max_steps=3))

    log("slice_converge_s: fast solver, one slice at a time ...")
    conv = one_at_a_time(det_fast, x_all[:n_converge], eps, fast_opts)
    res["slice_converge_s"] = statistics.median(t.seconds for t in conv)
    res["slice_converge_steps_median"] = float(np.median([t.steps[0] for t in conv]))
    n_window = det_fast.post.z_slices(WINDOW_SLICE_MM)
    res["slice_window_slices"] = n_window
    if n_window > 1:
        log(f"slice_window_s: the card's {det_fast.post.z_mm:g} mm window, {n_window} slices in one batch ...")
        res["slice_window_s"] = statistics.median(
            timed_solve(det_fast, x_all[i : i + n_window], eps, fast_opts).seconds for i in range(n_converge)
        )
        res["slice_window_next_s"] = res["slice_converge_s"]  # one new slice: the one-slice solve timed above
        res["slice_window_base_s"] = window_base_seconds(det_fast, images, n_window, n_converge)

    if reference:
        _reference_comparison(res, det_ref, det_fast, x_all[:n_reference], eps, ref_opts, fast_opts,
                              best_known_options, log)  # fmt: skip
    else:
        res["reference_skipped"] = SKIPPED

    log(f"volume_s_per_slice: Detector.run on {n_volume} slices, batches of {batch_size} ...")
    t = time.perf_counter()
    out = det_fast.run(images[:n_volume], eps)
    _sync(dev)
    vol_sec = time.perf_counter() - t
    res["volume_s_per_slice"] = vol_sec / n_volume
    res["volume_steps_mean"] = float(out.steps.mean())
    has_masks = bool(masks[:n_volume].any())
    res["volume_dice"] = (
        evaluate(list(out.d), list(masks[:n_volume].astype(bool)), tau).dice_mean if has_masks else None
    )
    if ablation:
        # what each inference choice is worth, on the same slices in the same run, with the Dice beside it
        res["volume_ablation"] = {}
        # (label, Detector options, torch.compile the decoder); each differs from det_fast in one choice only
        cl = det_fast.channels_last
        variants: list[tuple[str, dict, bool]] = [
            ("no BatchNorm folding", {"channels_last": cl, "fold_batchnorm": False}, False),
            (f"{layout_name(not cl)} layout", {"channels_last": not cl}, False),
        ]
        if compile_decoder:
            variants.append(("torch.compile(decode)", {"channels_last": cl}, True))
        for label, kw, compiled in variants:
            model_a, _ = load_checkpoint(stem, dev)
            det_a = Detector(model_a, dev, solver=fast_opts, post=det_fast.post, batch_size=batch_size, **kw)
            entry: dict[str, Any] = {}
            if compiled:
                det_a.model.decode = torch.compile(det_a.model.decode)
                t = time.perf_counter()
                det_a.run(images[:n_volume], eps, max_steps=2)  # compiles every batch shape of the run
                entry["compile_s"] = time.perf_counter() - t
            det_a.run(images[:batch_size], eps, max_steps=3)  # warm-up
            t = time.perf_counter()
            out_a = det_a.run(images[:n_volume], eps)
            _sync(dev)
            entry["volume_s_per_slice"] = (time.perf_counter() - t) / n_volume
            entry["dice"] = (
                evaluate(list(out_a.d), list(masks[:n_volume].astype(bool)), tau).dice_mean if has_masks else None
            )
            res["volume_ablation"][label] = entry

    log("flops_fraction: counted decoder FLOPs in the batched solve vs matmul rate ...")
    f_fwd, f_step = decoder_flops(model_plain, x_all[:1])
    bat = _total(batched(det_fast, x_all[:n_volume], eps, fast_opts))
    flops = bat["decoded_grad"] * f_step + bat["decoded_nograd"] * f_fwd
    rate = flops / bat["seconds"]
    mm_dtype = torch.bfloat16 if fast_opts.precision == "bf16" else torch.float32
    peak = matmul_rate(mm_dtype, dev)
    peak32 = matmul_rate(torch.float32, dev) if mm_dtype != torch.float32 else peak
    res["decoder_gflop_per_step"] = f_step / 1e9
    res["decoder_gflops_achieved"] = rate / 1e9
    res["matmul_gflops"] = {"dtype": str(mm_dtype).replace("torch.", ""), "rate": peak / 1e9, "fp32": peak32 / 1e9}
    res["flops_fraction"] = rate / peak
    res["flops_fraction_vs_fp32_matmul"] = rate / peak32
    # where the gap is: the decoder's own kernels (no solver around them) on one full batch
    dec_s = decoder_step_seconds(det_fast, x_all[:batch_size], fast_opts.precision)
    dec_rate = f_step * min(batch_size, n_volume) / dec_s
    res["decoder_only_gflops"] = dec_rate / 1e9
    res["decoder_only_fraction"] = dec_rate / peak
    res["solve_time_in_decoder"] = min(1.0, bat["decoded_grad"] * dec_s / min(batch_size, n_volume) / bat["seconds"])
    # the solver's own time per step on the same batch (a fixed number of steps: no early stop), against the
    # decoder's forward + backward alone: the solver's bookkeeping is the difference (goal: within 1.2x)
    fixed = replace(fast_opts, max_steps=20, rtol=0.0, patience=10**6)
    ts = timed_solve(det_fast, x_all[:batch_size], eps, fixed)
    res["solver_step_seconds"] = ts.seconds / max(1, int(ts.steps.max()))
    res["decoder_step_seconds"] = dec_s
    res["solver_step_over_decoder"] = res["solver_step_seconds"] / dec_s
    # the same split into a cost per extra step (the bookkeeping) and a cost per solve (the first step and the
    # float32 re-evaluation of the kept point): a 5-step solve against the 20-step one
    ts5 = timed_solve(det_fast, x_all[:batch_size], eps, replace(fixed, max_steps=5))
    n20, n5 = int(ts.steps.max()), int(ts5.steps.max())
    if n20 > n5:
        marginal = (ts.seconds - ts5.seconds) / (n20 - n5)
        res["solver_marginal_step_seconds"] = marginal
        res["solver_marginal_step_over_decoder"] = marginal / dec_s
        res["solver_fixed_seconds_per_solve"] = ts.seconds - n20 * marginal
    if profile_decoder:
        res["decoder_profile"] = decoder_profile(det_fast, x_all[:batch_size], fast_opts.precision)

    n_ba = min(n_volume, 16)
    if reference:
        log("before/after: stock solver (penalty, float32, batched) vs fast, with Dice on the same slices ...")
        res["before_after"] = _before_after(det_ref, det_fast, x_all[:n_ba], images[:n_ba], masks[:n_ba], eps, tau,
                                            ref_opts, fast_opts)  # fmt: skip
    _viewer_memory_preprocess(res, stem, dev, det_fast, images, masks, eps, tau, gui=gui, rss=rss,
                              preprocess=preprocess, workdir=workdir, log=log)  # fmt: skip
    res["loadavg_before"] = [round(v, 2) for v in load_before]
    res["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    return res


def _viewer_memory_preprocess(res, stem, dev, det, images, masks, eps, tau, *, gui, rss, preprocess, workdir, log):
    """The figures measured through the viewer and through ``detect`` (any model the two can run, ensembles
    included), and the preprocessing's, into ``res``."""
    if gui:
        log(f"slice_scroll_s: the viewer's controller on the demo, Up after {SCROLL_DWELL_S:g} s, twice ...")
        res.update(scroll_latency(str(stem), str(dev)))
        from app.bench.gui_latency import measure_gui

        log("tau_update_ms and gui_max_stall_ms: driving the viewer offscreen ...")
        with tempfile.TemporaryDirectory(dir=workdir) as td:
            gui_res = measure_gui(det, images, masks, eps, tau, model=str(stem), device=str(dev), workdir=Path(td))
        res.update(gui_res)
    if rss:
        log("peak_rss_mb: detect on a 256x256x155 volume in a subprocess ...")
        with tempfile.TemporaryDirectory(dir=workdir) as td:
            # detect uses the stock solver; a step cap keeps the run short and does not change the memory
            # (every step holds the same batch working set)
            res["detect_memory"] = peak_rss_detect(str(stem), str(dev), Path(td), ["--max-steps", "10"])
        res["peak_rss_mb"] = res["detect_memory"].get("peak_rss_mb")
    if preprocess:
        log("preprocess_s_per_volume: N4 and brain extraction on a skull-on 1 mm head ...")
        res["preprocess"] = preprocess_speed(log=log)
        res["preprocess_s_per_volume"] = res["preprocess"]["total_s"]


def _environment(dev) -> dict[str, Any]:
    """Where a ``bench speed`` run ran: device, torch, Python, threads, CPUs."""
    from app.core.device import describe_device

    return {
        "device": str(dev),
        "device_name": describe_device(dev),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
    }


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``'s model name on Linux, else :func:`platform.processor`): speed
    figures from different machines are not comparable, so every report names its CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: what the report says of the solver and decoder figures for an ensemble
ENSEMBLE_NOTE = (
    "an ensemble card: the solver and decoder figures (speedup_vs_reference, flops_fraction, the step ratio, the "
    "ablation) belong to its members; `bench speed --model MEMBER` measures them"
)


def ensemble_speed(
    stem: Path, dev, data, *, n_converge: int, n_volume: int, batch_size: int, gui: bool, rss: bool,
    preprocess: bool, workdir: Path | None, log: Log,
) -> dict[str, Any]:  # fmt: skip
    """``bench speed`` for an ensemble card (app.core.ensemble): what a user waits for, measured through the
    ensemble as ``detect`` and the viewer run it -- a slice, a slice's z window, a volume, the viewer, ``detect``'s
    memory. The solver's own figures are its members' (:data:`ENSEMBLE_NOTE`)."""
    from app.core.ensemble import load_ensemble

    load_before = os.getloadavg()
    det, card = load_ensemble(stem.with_suffix(".json"), str(dev), batch_size=batch_size)
    eps, tau, eps_rule = model_eps_tau(card)
    n_window = det.post.z_slices(WINDOW_SLICE_MM)
    images, masks, source = load_slices(data, max(n_volume, n_converge + n_window), det.model.config.image_size)
    first = det.members[0].detector
    res: dict[str, Any] = {
        "model": stem.name, "model_family": "ensemble", "members": [m.name for m in det.members], "eps": eps,
        "tau": tau, "eps_rule": f"{eps_rule}; a factor of each member's own eps", "slices": source,
        **_environment(dev), "solver_fast": first.solver.__dict__,
        "solver_fast_from": "each member's card (the first member's shown)",
        "layout": layout_name(first.channels_last), "reference_skipped": ENSEMBLE_NOTE, "ensemble_note": ENSEMBLE_NOTE,
    }  # fmt: skip
    det.run(images[:batch_size], eps, max_steps=3)  # warm-up: every member allocates and picks its kernels

    def seconds(x) -> float:
        t = time.perf_counter()
        det.run(x, eps)
        _sync(dev)
        return time.perf_counter() - t

    log("slice_converge_s: one slice through every member ...")
    res["slice_converge_s"] = statistics.median(seconds(images[i : i + 1]) for i in range(n_converge))
    res["slice_window_slices"] = n_window
    if n_window > 1:
        log(f"slice_window_s: the card's {det.post.z_mm:g} mm window, {n_window} slices through every member ...")
        res["slice_window_s"] = statistics.median(seconds(images[i : i + n_window]) for i in range(n_converge))
        res["slice_window_next_s"] = res["slice_converge_s"]
        res["slice_window_base_s"] = window_base_seconds(det, images, n_window, n_converge)
    log(f"volume_s_per_slice: the ensemble on {n_volume} slices, batches of {batch_size} ...")
    t = time.perf_counter()
    out = det.run(images[:n_volume], eps)
    _sync(dev)
    res["volume_s_per_slice"] = (time.perf_counter() - t) / n_volume
    has_masks = bool(masks[:n_volume].any())
    gts = list(masks[:n_volume].astype(bool))
    res["volume_dice"] = evaluate(list(out.d), gts, tau).dice_mean if has_masks else None
    _viewer_memory_preprocess(res, stem, dev, det, images, masks, eps, tau, gui=gui, rss=rss, preprocess=preprocess,
                              workdir=workdir, log=log)  # fmt: skip
    res["loadavg_before"] = [round(v, 2) for v in load_before]
    res["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    return res


def scroll_latency(model: str, device: str, dwell_s: float = SCROLL_DWELL_S, timeout_s: float = 300.0) -> dict:
    """``slice_scroll_s`` and ``slice_scroll_cold_s`` (module docstring): the viewer's controller with real worker
    threads (:class:`app.viewer.jobs.ExecutorLane`; reports are run on this thread, as the GUI's event loop runs
    them), on the bundled demo study with its ground truth (the viewer opens on its largest lesion), the eps grid's
    precompute off (it runs after the slices ahead). A warm-up run first (model load, kernels)."""
    import queue

    from app.data.demo import DEMO_MASK, DEMO_STUDY
    from app.viewer.controller import ViewerController
    from app.viewer.jobs import ExecutorLane

    inbox: queue.Queue = queue.Queue()

    def pump(until) -> None:
        end = time.perf_counter() + timeout_s
        while not until():
            try:
                inbox.get(timeout=0.002)()
            except queue.Empty:
                pass
            if time.perf_counter() > end:
                raise TimeoutError("slice_scroll_s: the viewer's controller gave no result in time")

    def run(prefetch: bool) -> tuple[list[float], int]:
        lanes = {n: ExecutorLane(n, inbox.put) for n in ("slice", "volume", "export", "load")}
        ctl = ViewerController(lanes=lanes, device=device, precompute_eps_grid=False, prefetch_slices=prefetch)
        try:
            if not ctl.set_model(model):
                raise RuntimeError(f"slice_scroll_s: cannot load {model}")
            ctl.open_study(DEMO_STUDY, DEMO_MASK)
            pump(lambda: ctl.state.study is not None)
            k0 = ctl.state.slice_index

            def final(k: int) -> bool:
                r = ctl.shown
                return r is not None and r.slice_index == k and r.final and r.eps > 0

            pump(lambda: final(k0))
            waits = []
            for k in (k0 + 1, k0 + 2):
                t_key = time.perf_counter() + dwell_s
                pump(lambda t_key=t_key: time.perf_counter() >= t_key)  # the reader looks; reports keep arriving
                t = time.perf_counter()
                ctl.state.slice_index = k
                pump(lambda k=k: final(k))
                waits.append(time.perf_counter() - t)
            return waits, k0
        finally:
            for lane in lanes.values():
                lane.cancel()
            pump(lambda: all(lane.is_idle() for lane in lanes.values()))

    run(True)  # warm-up
    on, k0 = run(True)
    off, _ = run(False)
    return {
        "slice_scroll_s": max(on),
        "slice_scroll_cold_s": max(off),
        "slice_scroll": {"study": "demo", "from_slice": k0, "dwell_s": dwell_s, "ahead_s": on, "without_s": off},
    }


def preprocess_speed(
    repeats: int = 3, threads: int | None = None, volume=None, affine=None, reference=None, log: Log = print
) -> dict[str, Any]:
    """N4 and brain extraction timed separately (median of ``repeats`` wall times; ITK limited to ``threads``,
    default torch's thread count), on ``volume``/``affine`` (default Colin27 ``ch2``, RAS canonical) with the
    extraction's Dice against ``reference`` (default ``ch2bet`` > 0)."""
    from app.core.metrics import dice
    from app.data.brain import extract_brain, n4_correct, set_threads

    if volume is None:
        from app.data.sources import path_of
        from app.io import load_study

        head = load_study(path_of("mricron-data", CH2, log))
        volume, affine = head.data, head.affine
        reference = load_study(path_of("mricron-data", CH2BET, log)).data > 0
    threads = int(threads or torch.get_num_threads())
    set_threads(threads)
    n4_s, ext_s, n4_cpu, ext_cpu, dices = [], [], [], [], []
    for i in range(max(1, repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        corrected, _facts = n4_correct(volume, affine)
        t1, c1 = time.perf_counter(), time.process_time()
        ext = extract_brain(corrected, affine)
        t2, c2 = time.perf_counter(), time.process_time()
        n4_s.append(t1 - t0)
        ext_s.append(t2 - t1)
        n4_cpu.append(c1 - c0)  # CPU time of all threads: what the stage costs whatever else the machine runs
        ext_cpu.append(c2 - c1)
        if reference is not None:
            dices.append(float(dice(ext.mask, reference)))
        log(f"preprocess run {i + 1}: N4 {t1 - t0:.2f} s, brain extraction {t2 - t1:.2f} s ({ext.status})")
    n4_med, ext_med = statistics.median(n4_s), statistics.median(ext_s)
    return {
        "volume_shape": [int(v) for v in np.asarray(volume).shape[:3]],
        "voxel_mm": [round(float(v), 3) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))],
        "itk_threads": threads,
        "repeats": len(n4_s),
        "n4_s": round(n4_med, 3),
        "extraction_s": round(ext_med, 3),
        "total_s": round(round(n4_med, 3) + round(ext_med, 3), 3),  # the sum of the two figures shown
        "n4_cpu_s": round(statistics.median(n4_cpu), 3),
        "extraction_cpu_s": round(statistics.median(ext_cpu), 3),
        "n4_s_all": [round(v, 3) for v in n4_s],
        "extraction_s_all": [round(v, 3) for v in ext_s],
        "extraction_status": ext.status,
        "dice_vs_reference": [round(v, 4) for v in dices],
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }


def preprocess_markdown(pre: dict[str, Any]) -> str:
    return (
        f"Preprocessing (skull-on {pre['volume_shape']} head at {pre['voxel_mm']} mm, ITK {pre['itk_threads']} "
        f"threads, median of {pre['repeats']}): N4 {pre['n4_s']:.2f} s, brain extraction {pre['extraction_s']:.2f} s, "
        f"together {pre['total_s']:.2f} s per volume wall time (runs: N4 {pre['n4_s_all']}, extraction "
        f"{pre['extraction_s_all']}); CPU time (all threads) N4 {pre['n4_cpu_s']:.2f} s, extraction "
        f"{pre['extraction_cpu_s']:.2f} s; extraction {pre['extraction_status']}, Dice vs the skull-stripped reference "
        f"{pre['dice_vs_reference']}; load average {pre['loadavg']}."
    )


def summary_markdown(res: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    fast = res.get("solver_fast") or {}
    lines = [
        f"# bench speed: {res['model']} ({res['model_family']}) on {res['device_name']}",
        "",
        f"torch {res['torch']}, {res['threads']} threads, {res['cpu_count']} CPUs "
        f"({res.get('cpu_model', 'model not recorded')}); load average before "
        f"{res['loadavg_before']}, after {res['loadavg_after']}; slices: {res['slices']}; eps {res['eps']:.4g} "
        f"({res['eps_rule']}), tau {res['tau']:.4g}. Fast path (what detect applies): "
        f"{fast.get('method')}/{fast.get('precision')}, {fast.get('max_steps')} steps, "
        f"{res.get('layout', 'channels_last')} layout ({res.get('solver_fast_from', 'FAST')}).",
        "",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for key, (op, goal) in GOALS.items():
        v = res.get(key)
        met = "" if v is None else ("yes" if (v <= goal if op == "<=" else v >= goal) else "**no**")
        lines.append(f"| {key} | {fmt(v)} | {op} {goal} | {met} |")
    if res.get("slice_window_s") is not None:
        lines += ["", f"slice_window_s: the card's z window spans {res['slice_window_slices']} slices at "
                  f"{WINDOW_SLICE_MM:g} mm, solved together on a slice's first request; the next slice's request "
                  f"(the session keeps what it solved: one new slice) takes "
                  f"{fmt(res.get('slice_window_next_s'))} s. Meanwhile the viewer shows the window's base map "
                  f"(\"+MG running...\"), {fmt(res.get('slice_window_base_s'))} s after the request "
                  f"(slice_window_base_s)."]  # fmt: skip
    if res.get("slice_scroll") is not None:
        sc = res["slice_scroll"]
        lines += ["", f"slice_scroll_s: the viewer's controller on the demo from slice {sc['from_slice']}, Up after "
                  f"{sc['dwell_s']:g} s, twice: {', '.join(f'{v:.3f}' for v in sc['ahead_s'])} s with the next slices "
                  f"solved ahead, {', '.join(f'{v:.3f}' for v in sc['without_s'])} s without "
                  "(slice_scroll_cold_s, the larger)."]  # fmt: skip
    ba = res.get("before_after", {})
    ref, fo, fb = res.get("reference", {}), res.get("fast_one_at_a_time", {}), res.get("fast_batched", {})
    sref = res.get("solver_reference") or {}
    if res.get("reference_skipped"):
        lines += ["", f"Reference comparisons (speedup_vs_reference, before/after): {res['reference_skipped']}."]
    else:
        lines += [
            "",
            "Reference (penalty, Adam lr 1e-3, fp32, one at a time, run to convergence: "
            f"patience {sref.get('patience')}, rtol {sref.get('rtol')}, at most {sref.get('max_steps')} steps) vs fast "
            "solver "
            f"({fast.get('method')}, {fast.get('precision')}, {res.get('layout', 'channels_last')}), compared at "
            f"{res.get('speedup_compared_at', 'their own stopping rules')}:",
            f"- reference: {fmt(ref.get('seconds_per_slice'))} s/slice, steps {ref.get('steps')}, loss "
            f"{[round(v, 5) for v in ref.get('loss', [])]}, gap to the best known loss "
            f"{[f'{v:.2%}' for v in ref.get('gap_to_best', [])]}, seconds to the equal-loss target "
            f"{[round(v, 3) for v in ref.get('seconds_to_target', [])]}",
            f"- fast, one at a time: {fmt(fo.get('seconds_per_slice'))} s/slice, steps {fo.get('steps')}",
            f"- fast, batched: {fmt(fb.get('seconds_per_slice'))} s/slice, steps {fb.get('steps')}, loss "
            f"{[round(v, 5) for v in fb.get('loss', [])]}, gap to the best known loss "
            f"{[f'{v:.2%}' for v in fb.get('gap_to_best', [])]}",
            f"- same final loss (fast <= reference x (1 + {res['same_loss_rtol']})) on every slice: "
            f"{res.get('same_final_loss')} (max relative difference {fmt(res.get('loss_rel_diff_max'))})",
            "",
            f"Before/after on {ba.get('slices')} slices, batched: stock solver {fmt(ba.get('before_s_per_slice'))} "
            f"s/slice ({fmt(ba.get('before_steps_mean'))} steps, mean loss {fmt(ba.get('before_loss_mean'))}, Dice "
            f"{fmt(ba.get('before_dice'))}) -> fast {fmt(ba.get('after_s_per_slice'))} s/slice "
            f"({fmt(ba.get('after_steps_mean'))} steps, mean loss {fmt(ba.get('after_loss_mean'))}, Dice "
            f"{fmt(ba.get('after_dice'))}).",
        ]
    if res.get("ensemble_note"):
        lines += ["", f"Members: {', '.join(res.get('members', []))}; {res['ensemble_note']}."]
    else:
        lines += _decoder_lines(res, fmt)
    abl = res.get("volume_ablation") or {}
    if abl:
        lines += [
            "",
            f"Volume ablation ({res.get('volume_s_per_slice', 0):.3g} s/slice, Dice {fmt(res.get('volume_dice'))} "
            "with everything on): "
            + "; ".join(f"{k}: {fmt(v['volume_s_per_slice'])} s/slice, Dice {fmt(v['dice'])}" for k, v in abl.items())
            + ".",
        ]
    prof = res.get("decoder_profile") or []
    if prof:
        lines += ["", "Decoder step profile (forward + backward, one batch; top operators by self time):", ""]
        lines += ["| operator | input shapes | ms per step | share |", "|---|---|---|---|"]
        lines += [f"| {p['op']} | `{p['input_shapes']}` | {p['ms_per_step']} | {p['share']:.0%} |" for p in prof]
        lines.append("")
    if "gui_path" in res:
        lines.append(f"GUI figures measured through: {res['gui_path']}.")
    if res.get("preprocess"):
        lines += ["", preprocess_markdown(res["preprocess"])]
    mem = res.get("detect_memory")
    if mem:
        lines.append(
            f"Memory: `{mem.get('command', '')}` -> {fmt(mem.get('peak_rss_mb'))} MB peak RSS"
            + (f" (error: {mem['error'][-200:]})" if mem.get("error") else "")
        )
    return "\n".join(lines) + "\n"


def _decoder_lines(res: dict[str, Any], fmt) -> list[str]:
    """The decoder and solver-step paragraph of the report (a single model's)."""
    return [
        "",
        f"Decoder: {fmt(res.get('decoder_gflop_per_step'))} GFLOP per image-step (forward + backward to z); "
        f"achieved {fmt(res.get('decoder_gflops_achieved'))} GFLOP/s; matmul "
        f"{res.get('matmul_gflops', {}).get('dtype')} {fmt(res.get('matmul_gflops', {}).get('rate'))} GFLOP/s "
        f"(fp32 {fmt(res.get('matmul_gflops', {}).get('fp32'))}); fraction vs fp32 matmul "
        f"{fmt(res.get('flops_fraction_vs_fp32_matmul'))}. The decoder alone (forward + backward, one batch, no "
        f"solver): {fmt(res.get('decoder_only_gflops'))} GFLOP/s, fraction {fmt(res.get('decoder_only_fraction'))}; "
        f"share of the solve spent in decoder kernels ~{fmt(res.get('solve_time_in_decoder'))}. "
        f"One solver step on the same batch: {fmt(res.get('solver_step_seconds'))} s against the decoder's own "
        f"forward + backward {fmt(res.get('decoder_step_seconds'))} s, ratio "
        f"{fmt(res.get('solver_step_over_decoder'))} (goal <= 1.2); each step beyond the fifth "
        f"{fmt(res.get('solver_marginal_step_seconds'))} s "
        f"(ratio {fmt(res.get('solver_marginal_step_over_decoder'))}), "
        f"plus {fmt(res.get('solver_fixed_seconds_per_solve'))} s once per solve (the first step and the float32 "
        "re-evaluation of the kept point).",
    ]


def write_outputs(res: dict[str, Any], out: Path) -> tuple[Path, Path]:
    from app.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "speed.json", out / "speed.md"
    text = json.dumps(res, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)) + "\n"
    atomic_write_text(js, text)
    atomic_write_text(md, summary_markdown(res))
    return js, md
