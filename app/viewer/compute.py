"""Per-slice and per-volume computations for the viewer and the figures, all through the shared
:class:`app.core.detector.Detector` (so base and +MG get exactly the post-processing ``detect`` uses).

Nothing here knows about threads or Qt: the viewer's worker calls these functions with a ``should_stop``
(cancel) and an ``on_progress`` callback; the figure command calls them directly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.metrics import dice
from app.nets.card import card_choices, card_eps_grid
from app.viewer.slices import ModelInput, StudySlices


@dataclass
class SliceResult:
    model: str
    slice_index: int
    eps: float
    s: np.ndarray  # pseudo-normal on the slice grid, (X, Y) or (X, Y, C), in [0, 1]
    d: np.ndarray  # post-processed anomaly map on the slice grid (X, Y)
    loss: float = float("nan")
    steps: int = 0
    seconds: float = 0.0
    final: bool = True
    precomputed: bool = False  # solved ahead of the slider, with the rest of the eps grid

    def mask(self, tau: float) -> np.ndarray:
        return self.d > tau

    def dice(self, tau: float, gt: np.ndarray | None) -> float | None:
        return None if gt is None else float(dice(self.mask(tau), gt))


class ModelSession:
    """A loaded model (by zoo name or checkpoint path) bound to a study's slices."""

    def detection(self, d: np.ndarray, tau: float) -> np.ndarray:
        """The detection on the study grid (a slice (X, Y) or the volume) as ``detect`` makes it: D > tau
        without the in-plane components the card's post-processing drops."""
        min_px = self.detector.post.min_component_px
        if not min_px or self.slices is None:
            return np.asarray(d) > tau
        return self.slices.detection_mask(d, tau, min_px)

    #: seconds between intermediate results while a slice converges (each costs the GUI thread a repaint)
    progress_interval_s: float = 0.05

    def __init__(self, name: str, model, card: dict, slices: StudySlices | None = None, device: str = "cpu"):
        from app.core.detector import Detector
        from app.data.domain import domain_from_card

        self.name = name
        self.card = card
        self.path: Path | None = None  # the checkpoint stem, when loaded by name or path
        #: what the model was trained on (the card's domain): a study outside it gets warnings
        self.domain = domain_from_card(card)
        self.choices = card_choices(card)
        self.eps_grid = card_eps_grid(card)
        # the card's solver, layout and post-processing, built as `detect` builds them: one pipeline
        self.detector = Detector.from_card(model, card, device)
        self.solver = self.detector.solver
        self.input = ModelInput.of(model)
        self.slices: StudySlices | None = None
        if slices is not None:
            self.slices = self._check(slices)

    def _check(self, slices: StudySlices) -> StudySlices:
        """The study seen through this model's input format. Nothing is computed here: the normalised model
        slices are prepared on first use (``slices.prepare()``, in a worker), once per input format."""
        return slices.with_model(self.input)

    def bind(self, slices: StudySlices) -> ModelSession:
        """The same loaded model on another study."""
        out = ModelSession.__new__(ModelSession)
        out.__dict__.update(self.__dict__)
        out.slices = self._check(slices)
        return out

    @classmethod
    def load(cls, name: str | None, slices: StudySlices | None = None, device: str = "auto") -> ModelSession:
        from app.core.device import resolve_device
        from app.nets.checkpoint import load_checkpoint
        from app.nets.zoo import DEFAULT_MODEL, resolve_model

        dev = resolve_device(device)
        stem = resolve_model(name or DEFAULT_MODEL)
        model, card = load_checkpoint(stem, dev)
        sess = cls(Path(stem).name, model, card, slices, str(dev))
        sess.path = Path(stem)
        return sess

    def prepared(self):
        """The bound study prepared for this model, with this model's domain warnings
        (:func:`app.data.pipeline.for_domain`), or None before preparation."""
        from app.data.pipeline import for_domain

        prep = None if self.slices is None else self.slices.prepared()
        return None if prep is None else for_domain(prep, self.slices.study, self.domain)

    def warnings(self) -> list[str]:
        """Every warning for the bound study and this model: reading warnings, then the domain warnings -- all of
        them once the study is prepared, before that the ones its header settles (modality, slice thickness)."""
        from app.data.domain import check_domain
        from app.viewer.study_run import all_warnings

        if self.slices is None:
            return []
        study = self.slices.study
        prep = self.prepared()
        return all_warnings(study, prep.warnings if prep is not None else check_domain(study, self.domain, {}))

    def model_facts(self) -> dict:
        """Name and card hash, for records of what was saved."""
        from app.io.seg import card_sha256

        card = None if self.path is None else self.path.with_suffix(".json")
        return {"name": self.name, "card_sha256": card_sha256(card) if card is not None and card.is_file() else ""}

    def solve_slice(
        self,
        k: int,
        eps: float,
        *,
        on_progress: Callable[[SliceResult], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress_interval_s: float | None = None,
    ) -> SliceResult:
        """MatchGen (or the base model for eps = 0) on slice k; ``on_progress`` receives intermediate results
        (at most every ``progress_interval_s``, default :attr:`progress_interval_s`) while the solver converges.
        With a z window in the card's post-processing the window's slices are solved together (one batch) and
        slice k's D is their mean, as in a whole-volume run."""
        import torch

        if progress_interval_s is None:
            progress_interval_s = self.progress_interval_s

        t0 = time.perf_counter()
        det = self.detector
        ks, at = self._window(k)
        i = ks.index(k)  # slice k in the batch
        x = torch.from_numpy(self.slices.model_slices(ks)).to(det.device)
        last = [t0]

        def callback(p) -> None:
            now = time.perf_counter()
            if on_progress is None or now - last[0] < progress_interval_s or bool(p.done.all()):
                return
            last[0] = now
            d = self._window_mean(*det.maps(x, p.s), at)
            on_progress(self._result(k, eps, p.s[i], d, float(p.loss[i]), p.step, now - t0, final=False))

        _, res = det.solve_batch(x, eps, callback=callback if on_progress else None, should_stop=should_stop)
        d = self._window_mean(*det.maps(x, res.s), at)
        return self._result(
            k, eps, res.s[i], d, float(res.loss[i]), int(res.steps[i]), time.perf_counter() - t0, final=True
        )

    def _window(self, k: int) -> tuple[list[int], np.ndarray]:
        """The slices slice k's D needs (itself, and its neighbours in the card's z window), each once, and for
        every position of the window the index into that list (edge slices repeat, as in a volume run)."""
        from app.core.maps import z_window

        n = self.slices.n_slices
        win = z_window(k, n, self.detector.post.z_slices(self.slices.slice_mm))
        ks = sorted({int(i) for i in win})
        return ks, np.searchsorted(ks, win)

    @staticmethod
    def _window_mean(d: np.ndarray, fg: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Slice k's D from the maps of its window's slices: their mean (the volume run's z window), zero outside
        slice k's own foreground. ``at``'s middle entry is slice k."""
        if at.size == 1:
            return d[int(at[0])]
        return d[at].mean(axis=0, dtype=np.float64).astype(np.float32) * fg[int(at[at.size // 2])]

    def _result(self, k, eps, s, d, loss, steps, seconds, final) -> SliceResult:
        s_np = s.detach().cpu().numpy() if hasattr(s, "detach") else np.asarray(s)
        return SliceResult(
            model=self.name,
            slice_index=k,
            eps=float(eps),
            s=self.slices.to_slice_grid(s_np),
            d=self.slices.to_slice_grid(np.asarray(d)),
            loss=loss,
            steps=steps,
            seconds=seconds,
            final=final,
        )

    def precompute(
        self,
        k: int,
        eps_values: list[float],
        on_result: Callable[[SliceResult], None],
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """Slice k at every eps of the grid in one batched solve (one copy of the slice per eps), each a cold
        start from z_o: the same answer the slider would get by asking for that eps alone, and what ``detect``
        gives for it."""
        import torch

        eps = sorted({float(e) for e in eps_values if e > 0})
        if not eps:
            return
        t0 = time.perf_counter()
        det = self.detector
        ks, at = self._window(k)
        w = len(ks)  # each eps solves slice k's whole z window
        x1 = torch.from_numpy(self.slices.model_slices(ks)).to(det.device)
        x = x1.repeat(len(eps), 1, 1, 1)
        _, res = det.solve_batch(x, torch.tensor(eps).repeat_interleave(w), should_stop=should_stop)
        d, fg = det.maps(x, res.s)
        seconds = time.perf_counter() - t0
        i_k = ks.index(k)
        for j, e in enumerate(eps):
            i = j * w + i_k
            d_k = self._window_mean(d[j * w : (j + 1) * w], fg[j * w : (j + 1) * w], at)
            r = self._result(k, e, res.s[i], d_k, float(res.loss[i]), int(res.steps[i]), seconds, final=True)
            r.precomputed = True
            on_result(r)

    def run_volume(
        self,
        eps: float,
        *,
        base_only: bool = False,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        batch_size: int | None = None,
        results: list[SliceResult] | None = None,
        result_slices: list[int] | None = None,
    ) -> np.ndarray:
        """Anomaly maps of every slice on the study's canonical grid (X, Y, Z). ``batch_size`` (default: the
        detector's) trades speed for finer progress reports. Pass a list as ``results`` to also get the
        :class:`SliceResult` of the slices ``result_slices`` (default all), in that order (the viewer caches
        them, so browsing the volume afterwards needs no solver)."""
        x = self.slices.model_slices()
        det = self.detector
        if batch_size is not None and batch_size != det.batch_size:
            import copy

            det = copy.copy(det)  # same model, options and device; only the batch size differs
            det.batch_size = int(batch_size)
        out = det.run(x, eps, base_only=base_only, progress=progress, should_stop=should_stop)
        d = self.slices.volume_map_to_grid(det.post.across_slices(out.d, out.foreground, self.slices.slice_mm))
        if results is not None:
            for k in range(out.s.shape[0]) if result_slices is None else result_slices:
                s_k = self.slices.to_slice_grid(out.s[k])
                results.append(
                    SliceResult(self.name, k, out.eps, s_k, d[:, :, k], float(out.loss[k]), int(out.steps[k]))
                )
        return d


#: default memory budget of the viewer's result cache (pseudo-normal + difference map of every cached result)
DEFAULT_CACHE_BYTES = 512 * 2**20


def result_nbytes(r: SliceResult) -> int:
    return int(np.asarray(r.s).nbytes + np.asarray(r.d).nbytes)


class ResultCache:
    """Final results per (model, slice, eps), bounded by memory: the least recently used are dropped once the
    results' arrays together exceed ``max_bytes`` (the newest result is always kept, however large)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        if max_bytes <= 0:
            raise ValueError("the cache budget must be positive")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._d: OrderedDict[tuple, SliceResult] = OrderedDict()

    @staticmethod
    def key(model: str, k: int, eps: float) -> tuple:
        return (model, int(k), round(float(eps), 4))

    def get(self, model: str, k: int, eps: float) -> SliceResult | None:
        key = self.key(model, k, eps)
        r = self._d.get(key)
        if r is not None:
            self._d.move_to_end(key)
        return r

    def put(self, r: SliceResult) -> None:
        key = self.key(r.model, r.slice_index, r.eps)
        old = self._d.pop(key, None)
        if old is not None:
            self.nbytes -= result_nbytes(old)
        self._d[key] = r
        self.nbytes += result_nbytes(r)
        while self.nbytes > self.max_bytes and len(self._d) > 1:
            _, dropped = self._d.popitem(last=False)
            self.nbytes -= result_nbytes(dropped)

    def keys(self) -> list[tuple]:
        return list(self._d)

    def clear(self) -> None:
        self._d.clear()
        self.nbytes = 0

    def __contains__(self, key) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)
