"""Model-sized slices in, pseudo-normal images and difference maps out: the one pipeline that ``detect``, the
viewer's worker and the benchmarks share, so base and +MG always get the same post-processing.

Slices are solved in batches (the solver treats each image independently, so batching only changes speed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from app.core.device import search_precision
from app.core.maps import Z_EDGES, detection_mask, foreground_mask, postprocess, z_mean, z_window_slices
from app.core.matchgen import MatchGenResult, Progress, SolverOptions, optimize
from app.errors import Cancelled, OptionError
from app.foreground import FOREGROUND_THRESHOLD
from app.nets.base import AnomalyModel
from app.nets.fuse import fold_batchnorm as fold
from app.solver_options import SOLVE_BATCH


@dataclass
class PostProcessing:
    """Applied identically to base and +MG maps: D median-filtered in-plane (``median_size`` px, 0 = off),
    zeroed outside the foreground (intensity above ``foreground_threshold``, holes filled) eroded by
    ``erode_px``; on a whole volume, D then averaged over the axial slices of a ``z_mm`` millimetre window
    (:func:`app.core.maps.z_mean`; 0 = off; a single slice has no neighbours, so the viewer solves the window;
    ``z_edge`` says what the window does at the ends of the volume);
    the detection D > tau without in-plane components smaller than ``min_component_px``. A model card's
    ``postprocess`` holds the values chosen on validation."""

    foreground_threshold: float = FOREGROUND_THRESHOLD
    median_size: int = 0
    erode_px: int = 0
    min_component_px: int = 0
    z_mm: float = 0.0
    z_edge: str = "nearest"  # the z window at the ends of a volume (app.core.maps.z_window)

    def __post_init__(self):
        for name in ("median_size", "erode_px", "min_component_px"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise OptionError(f"post-processing {name} must be a whole number >= 0, not {v!r}")
            setattr(self, name, int(v))
        if not (np.isfinite(self.z_mm) and self.z_mm >= 0):
            raise OptionError(f"post-processing z_mm must be a number of mm >= 0, not {self.z_mm!r}")
        self.z_mm = float(self.z_mm)
        if self.z_edge not in Z_EDGES:
            raise OptionError(f"post-processing z_edge must be one of {', '.join(Z_EDGES)}, not {self.z_edge!r}")

    def z_slices(self, slice_mm: float) -> int:
        """How many axial slices the z window spans at ``slice_mm`` spacing (1: no averaging)."""
        return z_window_slices(self.z_mm, slice_mm)

    def across_slices(self, d: np.ndarray, foreground: np.ndarray, slice_mm: float) -> np.ndarray:
        """Post-processed D of a whole volume's axial slices (Z, H, W), in order, averaged over the z window."""
        return z_mean(d, self.z_slices(slice_mm), foreground, self.z_edge)

    def apply(self, d: np.ndarray, foreground: np.ndarray) -> np.ndarray:
        return postprocess(d, foreground, self.median_size, self.erode_px)

    def mask(self, d: np.ndarray, tau: float) -> np.ndarray:
        return detection_mask(d, tau, self.min_component_px)

    def as_dict(self) -> dict:
        """The card's ``postprocess`` (``z_edge`` only where it is not the default, so older cards read the same)."""
        out = {"median_size": self.median_size, "erode_px": self.erode_px, "min_component_px": self.min_component_px,
               "z_mm": self.z_mm}  # fmt: skip
        return out if self.z_edge == "nearest" else {**out, "z_edge": self.z_edge}


@dataclass
class DetectionOutput:
    s: np.ndarray  # (N, C, S, S) pseudo-normal images (= x on skipped empty slices)
    d: np.ndarray  # (N, S, S) post-processed anomaly maps (0 on skipped slices)
    foreground: np.ndarray  # (N, S, S) bool
    eps: float | np.ndarray  # the eps applied: one number, or one per image when per-image eps were given
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # solver steps per slice
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # mean |x - s| per slice
    distance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # ||z - z0|| per slice
    analysed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # False: empty slice, skipped
    post: PostProcessing = field(default_factory=PostProcessing)
    #: per slice, the factor its eps was scaled by (``Detector.eps_reference_area``; 1 without): the slice was
    #: solved at eps * eps_factor, so distance / eps_factor is its distance in units of the eps given
    eps_factor: np.ndarray = field(default_factory=lambda: np.ones(0, np.float64))

    def mask(self, tau: float) -> np.ndarray:
        return self.post.mask(self.d, tau)


def has_foreground(x: np.ndarray, threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """(N,) bool: which slices (N, [C,] S, S) have any pixel above the foreground threshold. Slices without
    foreground cannot hold a detection (their map is zeroed outside the foreground), so the pipeline skips them."""
    x = np.asarray(x)
    xs = x.mean(axis=1) if x.ndim == 4 else x
    return (xs > threshold).reshape(len(xs), -1).any(axis=1)


def foreground_area(x: np.ndarray, threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """(N,) foreground pixels of each slice (N, [C,] S, S): the map's own foreground (:func:`foreground_mask`)."""
    x = np.asarray(x)
    xs = x.mean(axis=1) if x.ndim == 4 else x
    return foreground_mask(xs, threshold).reshape(len(xs), -1).sum(axis=1)


def area_factor(area: np.ndarray, reference_area: float) -> np.ndarray:
    """sqrt(area / reference_area) per slice (``area`` floored at one pixel): see :func:`area_scaled_eps`."""
    return np.sqrt(np.maximum(np.asarray(area, np.float64), 1.0) / reference_area)


def area_scaled_eps(eps: float | torch.Tensor, area: np.ndarray, reference_area: float) -> torch.Tensor:
    """eps per slice for a budget per brain pixel: eps * sqrt(area / reference_area) (``area`` floored at one
    pixel). z holds feature maps over the whole slice and moving features over background does not lower the L1,
    so the budget goes to the foreground: a change of delta per foreground pixel costs about delta * sqrt(area) in
    ||z - z_o||, and one eps lets each pixel of a small section (the top and bottom of a brain) move further than
    on the large sections eps was chosen on (docs/bench/eps-area/)."""
    factor = torch.from_numpy(area_factor(area, reference_area))
    e = torch.as_tensor(eps).detach().to("cpu", torch.float64)  # a tensor may live on the GPU; the solver moves it
    return (e.expand(len(factor)) if e.dim() == 0 else e) * factor


class Detector:
    """A frozen model on a device plus solver options. With ``eps_reference_area`` (pixels; a model card's
    ``eps_scaling``) every eps given is the eps of a slice with that much foreground, and each slice is solved at
    :func:`area_scaled_eps`; without it (the paper, the default) eps is the same for every slice."""

    def __init__(
        self,
        model: AnomalyModel,
        device: torch.device | str = "cpu",
        solver: SolverOptions | None = None,
        post: PostProcessing | None = None,
        batch_size: int = SOLVE_BATCH,
        channels_last: bool = False,
        fold_batchnorm: bool = True,
        eps_reference_area: float | None = None,
    ):
        if eps_reference_area is not None and not (np.isfinite(eps_reference_area) and eps_reference_area > 0):
            raise OptionError(f"eps reference area must be a number of pixels > 0, not {eps_reference_area!r}")
        self.eps_reference_area = None if eps_reference_area is None else float(eps_reference_area)
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
        # bfloat16 search steps where the device has them in hardware, float32 elsewhere (app.core.device)
        solver = solver or SolverOptions()
        precision, self.precision_note = search_precision(solver.precision, self.device)
        self.solver = solver if precision == solver.precision else replace(solver, precision=precision)
        self.post = post or PostProcessing()
        if batch_size < 1:
            raise OptionError("batch size must be >= 1")
        self.batch_size = batch_size
        #: set by :meth:`from_card` when the solver is not the one the card's eps/tau were chosen with
        self.solver_warning: str | None = None

    @classmethod
    def from_card(
        cls,
        model: AnomalyModel,
        card: dict,
        device: torch.device | str = "cpu",
        *,
        solver: str = "card",
        max_steps: int | None = None,
        median_size: int | None = None,
        batch_size: int = SOLVE_BATCH,
        fold_batchnorm: bool = True,
    ) -> Detector:
        """The detector a model card asks for, built the same way everywhere (``detect``, the viewer, ``bench
        quality --choice card``): the solver its eps/tau were chosen with (:func:`app.nets.card.solver_for`;
        ``solver``/``max_steps`` override it), its memory layout and its post-processing (``median_size``
        overrides the card's ``postprocess.median_size``; erosion and the minimum component size come from the
        card as they are). ``solver_warning`` is the one-line warning when the
        solver is not the card's (else None)."""
        from app.nets.card import card_channels_last, card_eps_reference_area, card_postprocess, solver_for

        options, warning = solver_for(card, solver, max_steps)
        post = card_postprocess(card)
        if median_size is not None:
            post["median_size"] = int(median_size)
        det = cls(
            model,
            device,
            solver=options,
            post=PostProcessing(**post),
            batch_size=batch_size,
            channels_last=card_channels_last(card),
            fold_batchnorm=fold_batchnorm,
            eps_reference_area=card_eps_reference_area(card),
        )
        det.solver_warning = warning
        return det

    def _to_tensor(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x)
        t = t.to(self.device, torch.float32)
        if t.dim() == 3:
            t = t.unsqueeze(1)
        self.model.check_input(t)
        if not torch.isfinite(t).all():
            raise OptionError("input slices contain NaN or infinite values")
        return t

    def foreground_area(self, x: torch.Tensor) -> np.ndarray:
        """(N,) foreground pixels of a batch (N, C, S, S), as the maps see it."""
        return foreground_area(x.detach().float().cpu().numpy(), self.post.foreground_threshold)

    def solve_batch(
        self,
        x: torch.Tensor,
        eps: float | torch.Tensor,
        *,
        callback: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        **overrides,
    ) -> tuple[torch.Tensor, MatchGenResult]:
        """One batch: z0 = encode(x), then MatchGen (eps = 0 gives the base model; a tensor gives one eps per
        image; with ``eps_reference_area`` each image's eps is scaled by its foreground area). Returns (z0,
        result)."""
        if self.eps_reference_area is not None and bool(torch.as_tensor(eps).ne(0).any()):
            eps = area_scaled_eps(eps, self.foreground_area(x), self.eps_reference_area)
        with torch.no_grad():
            z0 = self.model.encode(x)
        res = optimize(
            self.model.decode,
            x,
            z0,
            eps,
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
        eps: float | np.ndarray | Sequence[float],
        *,
        base_only: bool = False,
        skip_empty: bool = True,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        raw: bool = False,
        **overrides,
    ) -> DetectionOutput:
        """The batch loop every caller shares (``detect``, the viewer's whole-volume run, the validation protocol,
        ``bench speed``): all slices (N, [C,] S, S) in batches of ``batch_size``, each a cold start from z_o.

        ``eps`` is one number or one value per slice (the protocol solves (slice, eps) pairs this way); the solver
        keeps per-image state, so a slice's answer does not depend on its batch mates. ``base_only`` means
        eps = 0 everywhere. With ``skip_empty`` (default) slices without foreground (:func:`has_foreground`) are
        not solved: their ``s`` is the input, ``d`` is 0, ``steps`` 0, ``analysed`` False. ``progress(done,
        total)`` after each batch counts the slices to solve; ``should_stop`` is checked between solver steps
        and raises Cancelled. ``raw`` returns the model's maps before post-processing (to compare variants)."""
        xt = self._to_tensor(x)
        n = xt.shape[0]
        per_image = not base_only and np.ndim(eps) > 0
        if base_only:
            eps_arr = np.zeros(n, np.float32)
        else:
            if np.ndim(eps) > 0 and np.shape(eps) != (n,):
                raise OptionError(f"eps must be a number or have one value per slice ({n}), got shape {np.shape(eps)}")
            eps_arr = np.broadcast_to(np.asarray(eps, np.float64), (n,)).astype(np.float32)
            if not (np.isfinite(eps_arr).all() and (eps_arr >= 0).all()):
                raise OptionError("eps must be finite and >= 0")
        x_np = xt.detach().cpu().numpy()
        todo = np.flatnonzero(has_foreground(x_np, self.post.foreground_threshold)) if skip_empty else np.arange(n)
        S = tuple(xt.shape[2:])
        s_out = x_np.copy()
        d_out = np.zeros((n, *S), np.float32)
        fg_out = np.zeros((n, *S), bool)
        steps = np.zeros(n, np.int64)
        loss = np.zeros(n, np.float32)
        dist = np.zeros(n, np.float32)
        factor = np.ones(n, np.float64)
        analysed = np.zeros(n, bool)
        analysed[todo] = True
        for start in range(0, todo.size, self.batch_size):
            if should_stop is not None and should_stop():
                raise Cancelled("detection cancelled")
            ii = todo[start : start + self.batch_size]
            xb = xt[torch.from_numpy(ii).to(xt.device)] if ii.size < n else xt
            eb = torch.from_numpy(eps_arr[ii].copy()) if per_image else float(eps_arr[0]) if n else 0.0
            _, res = self.solve_batch(xb, eb, should_stop=should_stop, **overrides)
            d, fg = self.raw_maps(xb, res.s) if raw else self.maps(xb, res.s)
            s_out[ii] = res.s.detach().cpu().numpy()
            d_out[ii] = d
            fg_out[ii] = fg
            steps[ii] = res.steps.cpu().numpy()
            loss[ii] = res.loss.cpu().numpy()
            dist[ii] = res.distance.cpu().numpy()
            if self.eps_reference_area is not None and not base_only:  # the maps' foreground is the one it scaled by
                factor[ii] = area_factor(fg.reshape(len(fg), -1).sum(axis=1), self.eps_reference_area)
            if progress is not None:
                progress(min(start + self.batch_size, todo.size), int(todo.size))
        return DetectionOutput(
            s=s_out,
            d=d_out,
            foreground=fg_out,
            eps=eps_arr.copy() if per_image else (float(eps_arr[0]) if n else 0.0),
            steps=steps,
            loss=loss,
            distance=dist,
            analysed=analysed,
            post=self.post,
            eps_factor=factor,
        )
