"""Model-sized slices in, pseudo-normal images and difference maps out: the one pipeline that ``detect``, the
viewer's worker and the benchmarks share, so base and +MG always get the same post-processing.

Slices are solved in batches (the solver treats each image independently, so batching only changes speed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from app.core.maps import detection_mask, foreground_mask, postprocess
from app.core.matchgen import MatchGenResult, Progress, SolverOptions, optimize
from app.errors import Cancelled, OptionError
from app.nets.base import AnomalyModel
from app.nets.fuse import fold_batchnorm as fold


@dataclass
class PostProcessing:
    """Applied identically to base and +MG maps: D median-filtered in-plane (``median_size`` px, 0 = off),
    zeroed outside the foreground eroded by ``erode_px``; the detection D > tau without in-plane components
    smaller than ``min_component_px``. A model card's ``postprocess`` holds the values chosen on validation."""

    foreground_threshold: float = 0.01
    median_size: int = 0
    erode_px: int = 0
    min_component_px: int = 0

    def __post_init__(self):
        for name in ("median_size", "erode_px", "min_component_px"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise OptionError(f"post-processing {name} must be a whole number >= 0, not {v!r}")
            setattr(self, name, int(v))

    def apply(self, d: np.ndarray, foreground: np.ndarray) -> np.ndarray:
        return postprocess(d, foreground, self.median_size, self.erode_px)

    def mask(self, d: np.ndarray, tau: float) -> np.ndarray:
        return detection_mask(d, tau, self.min_component_px)

    def as_dict(self) -> dict:
        return {"median_size": self.median_size, "erode_px": self.erode_px, "min_component_px": self.min_component_px}


@dataclass
class DetectionOutput:
    s: np.ndarray  # (N, C, S, S) pseudo-normal images
    d: np.ndarray  # (N, S, S) post-processed anomaly maps
    foreground: np.ndarray  # (N, S, S) bool
    eps: float
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # solver steps per slice
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    post: PostProcessing = field(default_factory=PostProcessing)

    def mask(self, tau: float) -> np.ndarray:
        return self.post.mask(self.d, tau)


class Detector:
    """A frozen model on a device plus solver options."""

    def __init__(
        self,
        model: AnomalyModel,
        device: torch.device | str = "cpu",
        solver: SolverOptions | None = None,
        post: PostProcessing | None = None,
        batch_size: int = 64,
        channels_last: bool = False,
        fold_batchnorm: bool = True,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).freeze()
        # Both change float rounding only (~1e-7), so the given model is left as it is and a copy is changed.
        # channels_last lets oneDNN pick its fast convolution kernels on CPUs (about 2x per solver step in float32,
        # more in bfloat16); off by default, and the model card says whether its choices were made with it.
        # BatchNorm folding removes a quarter of a CPU solver step (app/nets/fuse.py). ``bench speed`` measures both.
        if channels_last or fold_batchnorm:
            self.model = copy.deepcopy(self.model)
        if fold_batchnorm:
            fold(self.model)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.channels_last = bool(channels_last)
        self.solver = solver or SolverOptions()
        self.post = post or PostProcessing()
        if batch_size < 1:
            raise OptionError("batch size must be >= 1")
        self.batch_size = batch_size

    def _to_tensor(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x)
        t = t.to(self.device, torch.float32)
        if t.dim() == 3:
            t = t.unsqueeze(1)
        self.model.check_input(t)
        if not torch.isfinite(t).all():
            raise OptionError("input slices contain NaN or infinite values")
        return t

    def solve_batch(
        self,
        x: torch.Tensor,
        eps: float | torch.Tensor,
        *,
        z_init: torch.Tensor | None = None,
        callback: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        **overrides,
    ) -> tuple[torch.Tensor, MatchGenResult]:
        """One batch: z0 = encode(x), then MatchGen (eps = 0 gives the base model; a tensor gives one eps per
        image). Returns (z0, result)."""
        with torch.no_grad():
            z0 = self.model.encode(x)
        res = optimize(
            self.model.decode,
            x,
            z0,
            eps,
            z_init=z_init,
            callback=callback,
            should_stop=should_stop,
            options=self.solver,
            **overrides,
        )
        return z0, res

    def raw_maps(self, x: torch.Tensor, s: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The model's anomaly maps (N, S, S) before post-processing, and the foreground (N, S, S)."""
        amap = self.model.anomaly_map(x, s).mean(dim=1).detach().cpu().numpy()
        xs = x.mean(dim=1).detach().cpu().numpy()
        return amap, foreground_mask(xs, self.post.foreground_threshold)

    def maps(self, x: torch.Tensor, s: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Post-processed anomaly maps (N, S, S) and the foreground (N, S, S) for slices x and pseudo-normals s."""
        amap, fg = self.raw_maps(x, s)
        return self.post.apply(amap, fg), fg

    def run(
        self,
        x: np.ndarray | torch.Tensor,
        eps: float,
        *,
        base_only: bool = False,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        **overrides,
    ) -> DetectionOutput:
        """All slices (N, [C,] S, S) in batches. ``progress(done, total)`` after each batch; ``should_stop`` is
        checked between solver steps and raises Cancelled."""
        xt = self._to_tensor(x)
        n = xt.shape[0]
        eps = 0.0 if base_only else float(eps)
        s_parts, d_parts, fg_parts, steps, losses = [], [], [], [], []
        for start in range(0, n, self.batch_size):
            if should_stop is not None and should_stop():
                raise Cancelled("detection cancelled")
            xb = xt[start : start + self.batch_size]
            _, res = self.solve_batch(xb, eps, should_stop=should_stop, **overrides)
            d, fg = self.maps(xb, res.s)
            s_parts.append(res.s.cpu().numpy())
            d_parts.append(d)
            fg_parts.append(fg)
            steps.append(res.steps.cpu().numpy())
            losses.append(res.loss.cpu().numpy())
            if progress is not None:
                progress(min(start + self.batch_size, n), n)
        return DetectionOutput(
            s=np.concatenate(s_parts),
            d=np.concatenate(d_parts),
            foreground=np.concatenate(fg_parts),
            eps=eps,
            steps=np.concatenate(steps),
            loss=np.concatenate(losses),
            post=self.post,
        )
