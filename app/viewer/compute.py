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

    def __init__(
        self, name: str, model, card: dict, slices: StudySlices | None = None, device: str = "cpu", detector=None
    ):
        from app.core.detector import Detector
        from app.data.domain import domain_from_card

        self.name = name
        self.card = card
        self.path: Path | None = None  # the checkpoint stem, when loaded by name or path
        #: what the model was trained on (the card's domain): a study outside it gets warnings
        self.domain = domain_from_card(card)
        self.choices = card_choices(card)
        self.eps_grid = card_eps_grid(card)
        # the card's solver, layout and post-processing, built as `detect` builds them: one pipeline (an ensemble
        # card's detector, app.core.ensemble, comes built: its members' own detectors and its post-processing)
        self.detector = detector if detector is not None else Detector.from_card(model, card, device)
        self.solver = self.detector.solver
        self.input = ModelInput.of(model)
        self._plain = PlainMaps()  # in-plane maps of solved slices, for the neighbours' z windows
        self.slices: StudySlices | None = None
        if slices is not None:
            self.slices = self._check(slices)

    @property
    def pseudo_normal_from(self) -> str | None:
        """For an ensemble, the member whose pseudo-normal is shown (its first: the ensemble's map is a mean of
        maps, not the difference to one image); None for a single model."""
        members = getattr(self.detector, "members", None)
        return members[0].name if members else None

    def _check(self, slices: StudySlices) -> StudySlices:
        """The study seen through this model's input format. Nothing is computed here: the normalised model
        slices are prepared on first use (``slices.prepare()``, in a worker), once per input format."""
        return slices.with_model(self.input)

    def bind(self, slices: StudySlices) -> ModelSession:
        """The same loaded model on another study."""
        out = ModelSession.__new__(ModelSession)
        out.__dict__.update(self.__dict__)
        out._plain = PlainMaps()  # another study: none of these maps apply
        out.slices = self._check(slices)
        return out

    @classmethod
    def load(cls, name: str | None, slices: StudySlices | None = None, device: str = "auto") -> ModelSession:
        from app.core.device import resolve_device
        from app.core.ensemble import load_detector
        from app.nets.zoo import DEFAULT_MODEL, resolve_model

        dev = resolve_device(device)
        stem = resolve_model(name or DEFAULT_MODEL)
        detector, model, card = load_detector(stem, dev)  # a model's, or an ensemble card's (app.core.ensemble)
        sess = cls(Path(stem).name, model, card, slices, str(dev), detector=detector)
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
        if progress_interval_s is None:
            progress_interval_s = self.progress_interval_s

        t0 = time.perf_counter()

        def partial(step, got) -> None:
            d, s_k, loss, _ = got[0]
            on_progress(self._result(k, eps, s_k, d, loss, step, time.perf_counter() - t0, final=False))

        ((d, s_k, loss, steps),) = self._solve_windows(
            k, [float(eps)], should_stop=should_stop, on_partial=partial if on_progress else None,
            interval_s=progress_interval_s,
        )  # fmt: skip
        return self._result(k, eps, s_k, d, loss, steps, time.perf_counter() - t0, final=True)

    def _solve_windows(
        self, k: int, eps_values: list[float], *, should_stop=None, on_partial=None, interval_s: float = 0.0
    ) -> list[tuple]:
        """Slice k at each eps of ``eps_values``: (D averaged over the card's z window, model grid; slice k's
        pseudo-normal; its loss; its steps). With a z window, every (slice, eps) an earlier request solved is taken
        from the session's cache of solved slices (in-plane maps, pseudo-normal, loss and steps), slice k included;
        the rest are solved in one batch (scrolling to the next slice then solves one slice, not the window, and a
        slice whose whole window is known solves none). Every (slice, eps) is a cold start from z_o, so a cached
        entry is what a new solve would give. ``on_partial(step, list)`` receives the same tuples for the solver's
        partial solutions, at most every ``interval_s``."""
        import torch

        det = self.detector
        ks, at = self._window(k)
        cached = {(j, e): self._plain.get((j, e)) if len(ks) > 1 else None for e in eps_values for j in ks}
        pairs = [(j, e) for e in eps_values for j in ks if cached[(j, e)] is None]
        row = {pair: i for i, pair in enumerate(pairs)}
        x = torch.from_numpy(self.slices.model_slices([j for j, _ in pairs])).to(det.device) if pairs else None

        def assemble(s, loss, steps, maps=None) -> list[tuple]:
            d, fg = maps if maps is not None else det.maps(x, s) if pairs else (None, None)
            out = []
            for e in eps_values:
                maps = [(d[row[(j, e)]], fg[row[(j, e)]]) if (j, e) in row else cached[(j, e)][:2] for j in ks]
                d_k = self._window_mean(np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps]), at,
                                        ks.index(k))  # fmt: skip
                if (k, e) in row:
                    i = row[(k, e)]
                    out.append((d_k, s[i], float(loss[i]), _steps_of(steps, i)))
                else:
                    out.append((d_k, *cached[(k, e)][2:]))
            return out, d, fg

        if not pairs:  # the whole window is known: nothing to solve
            return assemble(None, None, None)[0]
        if not hasattr(det, "solve_batch"):  # an ensemble: its members solve in turn, no partial results
            return self._solve_ensemble(x.cpu().numpy(), pairs, assemble, should_stop, cache=len(ks) > 1)
        last = [time.perf_counter()]

        def callback(p) -> None:
            now = time.perf_counter()
            if now - last[0] < interval_s or bool(p.done.all()):
                return
            last[0] = now
            on_partial(p.step, assemble(p.s, p.loss, p.step)[0])

        eps_arg = eps_values[0] if len(eps_values) == 1 else torch.tensor([e for _, e in pairs])
        _, res = det.solve_batch(x, eps_arg, callback=callback if on_partial else None, should_stop=should_stop)
        out, d, fg = assemble(res.s, res.loss, res.steps)
        if len(ks) > 1:
            s_np = res.s.detach().cpu().numpy()
            for pair, i in row.items():
                self._plain.put(
                    pair, (d[i].copy(), fg[i].copy(), s_np[i].copy(), float(res.loss[i]), _steps_of(res.steps, i))
                )
        return out

    def _solve_ensemble(self, x: np.ndarray, pairs: list[tuple], assemble, should_stop, cache: bool) -> list[tuple]:
        """:meth:`_solve_windows` for an ensemble detector: each eps's (slice, eps) pairs through its ``run`` (every
        member at eps times its own eps, the maps averaged and post-processed in-plane), then cached as a single
        model's are."""
        n = len(pairs)
        d = np.zeros((n, *x.shape[2:]), np.float32)
        fg = np.zeros((n, *x.shape[2:]), bool)
        s, loss, steps = np.zeros_like(x), np.zeros(n, np.float32), np.zeros(n, np.int64)
        for e in sorted({e for _, e in pairs}):
            ii = [i for i, (_, ee) in enumerate(pairs) if ee == e]
            out = self.detector.run(x[ii], e, should_stop=should_stop)
            d[ii], fg[ii], s[ii], loss[ii], steps[ii] = out.d, out.foreground, out.s, out.loss, out.steps
        result = assemble(s, loss, steps, maps=(d, fg))[0]
        if cache:
            for i, pair in enumerate(pairs):
                self._plain.put(pair, (d[i].copy(), fg[i].copy(), s[i].copy(), float(loss[i]), int(steps[i])))
        return result

    def _window(self, k: int) -> tuple[list[int], np.ndarray]:
        """The slices slice k's D needs (itself, and its neighbours in the card's z window), each once, and for
        every position of the window the index into that list (at the ends of the volume as in a volume run: edge
        slices repeated, or the window shrunk, as the card's ``z_edge`` says)."""
        from app.core.maps import z_window

        n = self.slices.n_slices
        post = self.detector.post
        win = z_window(k, n, post.z_slices(self.slices.slice_mm), post.z_edge)
        ks = sorted({int(i) for i in win})
        return ks, np.searchsorted(ks, win)

    @staticmethod
    def _window_mean(d: np.ndarray, fg: np.ndarray, at: np.ndarray, own: int) -> np.ndarray:
        """Slice k's D from the maps of its window's slices: their mean (the volume run's z window), zero outside
        slice k's own foreground, ``fg[own]``."""
        if at.size == 1:
            return d[int(at[0])]
        return d[at].mean(axis=0, dtype=np.float64).astype(np.float32) * fg[own]

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
        gives for it. With a z window, each eps solves those of its window's slices (slice k included) that the
        session has not solved yet."""
        eps = sorted({float(e) for e in eps_values if e > 0})
        if not eps:
            return
        t0 = time.perf_counter()
        got = self._solve_windows(k, eps, should_stop=should_stop)
        seconds = time.perf_counter() - t0
        for e, (d, s_k, loss, steps) in zip(eps, got, strict=True):
            r = self._result(k, e, s_k, d, loss, steps, seconds, final=True)
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
        if batch_size is not None and hasattr(det, "solve_batch") and batch_size != det.batch_size:
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


def _steps_of(steps, i: int) -> int:
    """Image i's solver steps from a progress report (one step count for the batch) or a result (one per image)."""
    return int(steps if np.ndim(steps) == 0 else steps[i])


class PlainMaps:
    """A bounded, thread-safe LRU of solved slices by (slice, eps): their in-plane maps (D before the z window, the
    foreground), pseudo-normal, loss and steps -- what a slice's z window needs of its neighbours and what a request
    for an already solved slice needs of it. Per study: a session bound to another study starts empty."""

    def __init__(self, max_items: int = 512):  # about 145 KB each at 128 x 128 (D, s float32 + foreground): 75 MB
        import threading

        self.max_items = max_items
        self._items: OrderedDict[tuple, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple | None:
        with self._lock:
            v = self._items.get(key)
            if v is not None:
                self._items.move_to_end(key)
            return v

    def put(self, key: tuple, value: tuple) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


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
