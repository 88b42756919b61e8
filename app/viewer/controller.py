"""The viewer's behaviour, without Qt: what to compute, what to show, what to keep.

The window (:mod:`app.gui.window`) renders and forwards; everything it used to decide lives here, as napari
keeps its behaviour in ``napari.components`` and FSLeyes keeps display options apart from its widgets:

* **requests and the cache** -- the current (model, slice, eps, +MG) is answered from the
  :class:`~app.viewer.compute.ResultCache` (bounded by memory) or sent to the *slice* lane; only the newest
  request counts, a result is shown only if it is the one the newest request wants, and results of an earlier
  study or model are dropped (a generation floor). The timing figure is the time from *this* request to the
  screen;
* **the neighbouring slices** -- solved ahead at the current eps after a result (:data:`PREFETCH_AHEAD` slices in
  the direction the reader last scrolled, :data:`PREFETCH_BEHIND` the other way), so scrolling shows the next slice
  from the cache; with the card's z window each costs one slice's solve (the session keeps what it solved); a newer
  request stops such a solve only when it no longer wants that slice, and never asks for it twice;
* **the eps grid** -- the card's calibration grid snapped to slider positions, precomputed after a result and the
  neighbours;
* **preparing a study** for a model's input format -- off the GUI thread (first thing of the slice job), cached
  per input format (:class:`~app.viewer.slices.PrepCache`);
* **the whole-volume run and "save after the run"** -- on the *volume* lane, through the shared
  :meth:`app.core.detector.Detector.run`; a pending save belongs to one run (its generation), so a cancelled or
  replaced run never saves to an old path;
* **Figure-2 export** -- on its own *export* lane, with its own state and error title;
* **warnings** -- every reading and domain warning of the current study and model (:attr:`warnings`, event
  ``warnings``), never silent: the window shows them in a banner; the brain mask the study was prepared with is
  outlined on the panels while ``state.show_brain`` is on (:meth:`brain_overlay`);
* **studies** -- loaded on the *load* lane; **recent files** (a store the GUI backs with QSettings);
  **model switching** (the card sets the eps range, eps and tau).

Other views subscribe to :attr:`ViewerController.events` (and to ``state.events``) and call the public methods;
the names are listed in :data:`EVENTS` and in docs/viewer.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import MatchGenError, StudyError
from app.solver_options import SOLVE_BATCH
from app.viewer.compute import DEFAULT_CACHE_BYTES, ModelSession, ResultCache, SliceResult
from app.viewer.events import EmitterGroup
from app.viewer.jobs import JobContext, Lane, ManualLane
from app.viewer.overlay import detection_overlay
from app.viewer.slices import StudySlices
from app.viewer.state import ViewerState

#: the lanes a controller needs: slice solves, the whole-volume run, Figure-2 export, study loading
LANES = ("slice", "volume", "export", "load")

#: the controller's events (``controller.events.<name>.connect(callback)``; the callback gets one value)
EVENTS = {
    "result": "Shown: a result to put on screen (final or intermediate)",
    "timing": "str: solver time and time from this request to the screen, or load/volume times",
    "info": "str: what is shown (model, eps, loss, steps), or what is being computed",
    "status": "str: a transient message for the status bar",
    "error": "(title, message): something the user must read",
    "session": "ModelSession | None: the model changed (its card set eps range, eps and tau)",
    "study_opened": "StudySlices: a study finished loading and is now state.study",
    "loading": "str | None: the path being loaded, None when loading ended",
    "volume_running": "bool",
    "volume_progress": "float in [0, 1]",
    "volume_done": "VolumeResult",
    "export_running": "bool",
    "export_done": "Path: the written figure",
    "saved": "Path: a written mask",
    "warnings": "list[str]: every warning for the current study and model (reading, domain: skull present but "
    "extraction failed, other contrast, CT to an MR model, thick slices, ...); [] when none. The banner shows it",
    "prepared": "StudySlices: the study was prepared for the model (brain mask and all warnings now known)",
    "recent": "list[str]: recent studies, newest first",
    "cursor": "(x, y, k) voxel under the mouse on the study grid, or None when it left the images",
}

#: eps slider positions between 0 and the card's eps_max (the zoo's calibration grids have 6 even steps)
EPS_STEPS = 30
#: slices solved ahead of the reader after a result: in the direction of the last move, and the other way
PREFETCH_AHEAD = 2
PREFETCH_BEHIND = 1
MAX_RECENT = 8
#: slices per batch in the whole-volume run: detect's (small enough for a progress bar that moves)
VOLUME_BATCH = SOLVE_BATCH


@dataclass
class Shown:
    """A result for the screen. ``final=False``: an intermediate image (the solver converging) or the base
    model's result shown while +MG runs; ``note`` says which."""

    result: SliceResult
    final: bool
    note: str = ""
    cached: bool = False


@dataclass
class Request:
    key: tuple
    t0: float
    gen: int | None = None


@dataclass
class VolumeRun:
    """A whole-volume run in progress and the save that waits for it (path and the tau it was asked with)."""

    gen: int
    model: str
    eps: float
    save_path: str | None = None
    save_tau: float | None = None


@dataclass
class VolumeResult:
    model: str
    eps: float
    d: np.ndarray  # (X, Y, Z) anomaly maps on the study's canonical grid
    seconds: float
    study: StudySlices | None = None

    def matches(self, model: str, eps: float, study) -> bool:
        return self.model == model and abs(self.eps - eps) <= 1e-9 and self.study is study


@dataclass
class ExportJob:
    gen: int
    path: str
    models: list[str]


class MemoryStore:
    """A list kept in memory (the GUI uses a QSettings store with the same two methods)."""

    def __init__(self, items: list[str] | None = None):
        self.items = list(items or [])

    def load(self) -> list[str]:
        return list(self.items)

    def save(self, items: list[str]) -> None:
        self.items = list(items)


class RecentFiles:
    def __init__(self, store, max_items: int = MAX_RECENT):
        self.store = store
        self.max_items = max_items

    def items(self) -> list[str]:
        v = self.store.load() or []
        return [v] if isinstance(v, str) else [str(p) for p in v]

    def add(self, path: str) -> list[str]:
        items = [path, *[p for p in self.items() if p != path]][: self.max_items]
        self.store.save(items)
        return items


def describe(r: SliceResult) -> str:
    return f"{r.model} +MG eps={r.eps:.3g}" if r.eps > 0 else f"{r.model} (base)"


class ViewerController:
    """The viewer's behaviour; see the module docstring. ``lanes`` maps each name of :data:`LANES` to a lane
    (:mod:`app.viewer.jobs`); missing ones are :class:`ManualLane` (run only when told)."""

    def __init__(
        self,
        state: ViewerState | None = None,
        *,
        lanes: dict[str, Lane] | None = None,
        device: str = "auto",
        recent_store=None,
        precompute_eps_grid: bool = True,
        prefetch_slices: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        clock: Callable[[], float] = time.perf_counter,
        figure_writer: Callable | None = None,
    ):
        self.state = state or ViewerState()
        self.device = device
        self.precompute_eps_grid = precompute_eps_grid
        self.prefetch_slices = prefetch_slices
        self._last_slice: int | None = None  # the slice of the previous request ...
        self._scroll = 1  # ... and the direction of the last move along the slices (+1 up, -1 down)
        # the (slice, eps) the newest request wants solved ahead (read by the worker: a solve ahead that is still
        # wanted is not cancelled by a newer request), and those being solved ahead now (not asked for twice)
        self._ahead_wanted: frozenset = frozenset()
        self._ahead_running: set = set()
        self._ahead_lock = threading.Lock()
        self.clock = clock
        # app.figure.write_figure2, given by the layer above (app.figure builds on app.viewer, not the reverse)
        self.figure_writer = figure_writer
        self.eps_steps = EPS_STEPS
        self.cache = ResultCache(cache_bytes)
        self.recent = RecentFiles(recent_store if recent_store is not None else MemoryStore())
        self.events = EmitterGroup(*EVENTS)
        self.lanes: dict[str, Lane] = {n: (lanes or {}).get(n) or ManualLane(n) for n in LANES}
        for name, lane in self.lanes.items():
            lane.listen(
                lambda g, k, p, n=name: self.report(n, g, k, p),
                lambda g, m, n=name: self.failed(n, g, m),
            )
        self.session: ModelSession | None = None
        self.shown: SliceResult | None = None
        self._shown_detection: tuple | None = None  # (result, tau, saved mask, session, its detection): shown_detection
        self.want: Request | None = None
        self.volume: VolumeResult | None = None
        self.volume_run: VolumeRun | None = None
        self.export_job: ExportJob | None = None
        #: a saved batch result (app.viewer.findings.SavedResult) answering slice requests instead of the model,
        #: set and cleared by app.viewer.worklist_session (a new study clears it)
        self.saved = None
        self.timing = ""
        #: every warning for the current study and model (what the banner shows; see EVENTS["warnings"])
        self.warnings: list[str] = []
        self.loading: str | None = None  # the study being read
        self._floor = 0  # slice-lane reports at or below this generation belong to an earlier study or model
        self._load_gen = 0
        self._hold = 0
        # tau follows the card (its tau with +MG, tau_base without, as `detect` and Figure 2 apply them) until
        # the user sets a tau of their own
        self.tau_from_card = True
        self._setting_tau = False
        self._held = False
        ev = self.state.events
        ev.study.connect(self._on_study)
        ev.slice_index.connect(lambda _k: self.request())
        ev.eps.connect(lambda _e: self.request())
        ev.use_mg.connect(self._on_use_mg)
        ev.tau.connect(self._on_tau)

    # --- helpers ------------------------------------------------------------------------------------------------
    def _error(self, title: str, message: str) -> None:
        self.state.message = message
        self.events.error.emit((title, message))

    def _update_warnings(self) -> None:
        """Recompute :attr:`warnings` (study and model changed, or the study was prepared) and tell the views."""
        sl, sess = self.state.study, self.session
        if sl is None:
            new = []
        elif sess is not None and sess.slices is not None:
            new = sess.warnings()
        else:
            new = list(getattr(sl.study, "warnings", None) or [])
        if new != self.warnings:
            self.warnings = new
            self.events.warnings.emit(list(new))

    def _prepared_report(self) -> None:
        self._update_warnings()
        if self.state.study is not None:
            self.events.prepared.emit(self.state.study)

    def brain_overlay(self) -> np.ndarray | None:
        """RGBA outline of the brain mask on the current slice while ``state.show_brain`` is on (None: off, no
        model yet, not prepared yet, or no brain found -- the warnings say why)."""
        from app.viewer.overlay import brain_outline

        sess = self.session
        if not self.state.show_brain or sess is None or sess.slices is None or self.state.study is None:
            return None
        return brain_outline(sess.slices.brain_slice(self.state.slice_index))

    @contextmanager
    def _one_request(self) -> Iterator[None]:
        """Several state changes, one request at the end (a model switch sets eps_max, eps and tau)."""
        self._hold += 1
        try:
            yield
        finally:
            self._hold -= 1
            if self._hold == 0 and self._held:
                self._held = False
                self.request()

    def wanted_eps(self) -> float:
        return self.state.eps if self.state.use_mg else 0.0

    # --- studies ------------------------------------------------------------------------------------------------
    def open_study(self, path, mask=None) -> int:
        """Load a study (and optionally its ground-truth mask) on the load lane; a newer open replaces it."""
        from app.viewer.loading import open_study

        def job(ctx: JobContext) -> None:
            t0 = time.perf_counter()
            try:
                slices = open_study(path, mask)
            except MatchGenError:
                raise
            except Exception as exc:  # noqa: BLE001 - a reader's bug is reported as a bad file, readably
                raise StudyError(f"{Path(path).name}: {type(exc).__name__}: {exc}") from exc
            ctx.emit("study", (slices, str(path), time.perf_counter() - t0))

        self._load_gen = self.lanes["load"].submit(job)
        self.loading = str(path)
        self.events.loading.emit(self.loading)
        self.events.status.emit(f"Loading {Path(path).name}...")
        return self._load_gen

    def set_study(self, slices: StudySlices, path: str | None = None, seconds: float | None = None) -> None:
        """Show a loaded study (what the load lane's result does)."""
        if path is not None:
            self.events.recent.emit(self.recent.add(str(path)))
        self.state.study = slices
        self._update_warnings()
        if seconds is not None:
            self.timing = f"loaded in {seconds:.2f} s"
            self.events.timing.emit(self.timing)
        self.events.status.emit(f"opened {slices.name} ({slices.modality}, {slices.n_slices} slices)")
        self.events.study_opened.emit(slices)

    def load_mask(self, path) -> bool:
        from app.viewer.loading import open_mask

        study = self.state.study
        if study is None:
            self._error("No study", "open a study before its ground-truth mask")
            return False
        try:
            gt = open_mask(path, study)
        except MatchGenError as exc:
            self._error("Cannot load ground truth", str(exc))
            return False
        study.gt = gt
        self.state.gt = gt
        return True

    def _new_epoch(self) -> None:
        """Forget everything computed for the previous study or model; their late reports are dropped."""
        self.lanes["slice"].cancel()
        self._floor = self.lanes["slice"].generation
        self.cache.clear()
        self.shown = None
        self.want = None
        self._last_slice, self._scroll = None, 1
        self._ahead_wanted = frozenset()

    def _on_study(self, slices: StudySlices | None) -> None:
        self._new_epoch()
        self.saved = None
        self.volume = None
        if self.volume_run is not None:  # a run (and its pending save) for the previous study
            self.cancel_volume(quiet=True)
        if slices is None:
            return
        with self._one_request():
            self.state.gt = slices.gt
            self.state.window = slices.default_window()
            if self.session is not None:
                self.session = self.session.bind(slices)
            elif self.state.model_name is not None:
                self.set_model(self.state.model_name)
            self._update_warnings()

    # --- models -------------------------------------------------------------------------------------------------
    def set_model(self, name: str) -> bool:
        """Load a model from the zoo (or a checkpoint path); its card sets the eps range, eps and tau. The study
        is prepared for the model's input format in the slice job, not here."""
        try:
            sess = ModelSession.load(name, None, self.device)
            if self.state.study is not None:
                sess = sess.bind(self.state.study)
        except MatchGenError as exc:
            self._error("Cannot use model", str(exc))
            return False
        with self._one_request():
            self._new_epoch()
            self.session = sess
            self.volume = None
            ch = sess.choices
            self.state.eps_max = ch["eps_max"]
            self.state.eps = ch["eps"]
            self._set_card_tau()
            self.tau_from_card = True
            self.state.model_name = name
            self.events.session.emit(sess)
            self._update_warnings()
            self._held = True
        return True

    def card_tau(self) -> float | None:
        """The card's tau for the current mode: ``tau`` with +MG, ``tau_base`` for the base model alone."""
        if self.session is None:
            return None
        return self.session.choices["tau" if self.state.use_mg else "tau_base"]

    def _set_card_tau(self) -> None:
        tau = self.card_tau()
        if tau is None:
            return
        self._setting_tau = True
        try:
            self.state.tau = tau
        finally:
            self._setting_tau = False

    def _on_tau(self, _tau: float) -> None:
        if not self._setting_tau:
            self.tau_from_card = False  # the user's own threshold: kept from now on

    def _on_use_mg(self, _mg: bool) -> None:
        with self._one_request():
            if self.tau_from_card:
                self._set_card_tau()
            self._held = True

    # --- eps positions and the precomputed grid -----------------------------------------------------------------
    @property
    def eps_step(self) -> float:
        return self.state.eps_max / self.eps_steps

    def eps_positions(self) -> list[float]:
        """The values the eps slider can take (0, step, ..., eps_max)."""
        step = self.eps_step
        return [i * step for i in range(self.eps_steps + 1)]

    def snap_eps(self, eps: float) -> float:
        return min(self.eps_positions(), key=lambda v: abs(v - eps))

    def nudge_eps(self, steps: int) -> None:
        self.state.eps = self.state.eps + steps * self.eps_step

    def eps_grid(self) -> list[float]:
        """eps values to precompute: the card's calibration grid snapped to slider positions where it has one (its
        even steps are slider positions: the slider's 30 steps are a multiple of the zoo's 6), else every slider
        position; 0 (the base model) is not part of it."""
        card_grid = self.session.eps_grid if self.session is not None else []
        if card_grid:
            return sorted({v for v in (self.snap_eps(e) for e in card_grid) if v > 0})  # fine values near 0 merge
        return [e for e in self.eps_positions() if e > 0]

    # --- slice requests -----------------------------------------------------------------------------------------
    def request(self) -> int | None:
        """Show the current (slice, eps, +MG) from the cache, or ask the slice lane for it (newest request
        wins). Returns the lane generation of the submitted job, or None when nothing had to be computed."""
        if self._hold:
            self._held = True
            return None
        sess, sl = self.session, self.state.study
        if self.saved is not None and sl is not None:
            return self._show_saved()
        if sess is None or sess.slices is None or sl is None:
            return None
        lane = self.lanes["slice"]
        k = self.state.slice_index
        mg = self.state.use_mg
        eps = self.wanted_eps()
        self.want = want = Request(ResultCache.key(sess.name, k, eps), self.clock())
        base = self.cache.get(sess.name, k, 0.0)
        hit = self.cache.get(sess.name, k, eps)
        if hit is not None:
            self._show(hit, final=True, cached=True)
        elif base is not None:
            self._show(base, final=False, note="+MG running...")
        grid: list[float] = []
        if mg and self.precompute_eps_grid:
            grid = [e for e in self.eps_grid() if self.cache.get(sess.name, k, e) is None]
        near = self._neighbours(k)
        with self._ahead_lock:
            running = set(self._ahead_running)
        # this very slice is being solved ahead right now (the reader got there first): that solve goes on and
        # its result is shown when it arrives, instead of a second solve
        arriving = hit is None and (k, eps) in running
        self._ahead_wanted = frozenset([(j, eps) for j in near] + ([(k, eps)] if arriving else []))
        ahead = [j for j in near if self.cache.get(sess.name, j, eps) is None and (j, eps) not in running]
        need_base = base is None and hit is None and not arriving
        need_mg = hit is None and eps > 0 and not arriving
        if arriving:
            self.events.info.emit(f"slice {k}: being solved ahead, shown when it arrives...")
        if not (need_base or need_mg or grid or ahead):
            lane.cancel()
            return None
        if (need_base or need_mg) and not sess.slices.is_prepared:
            self.events.info.emit(f"preparing {sl.name} for {sess.name}...")

        def job(ctx: JobContext) -> None:
            fresh = not sess.slices.is_prepared
            try:
                # N4 + brain extraction (skull-on MRI), normalise and slice: here, off the GUI thread, once per
                # input format
                sess.slices.prepare()
            except MatchGenError as exc:
                ctx.emit("unfit", str(exc))
                return
            if fresh:
                ctx.emit("prepared", None)
            if need_base:
                ctx.emit("final", sess.solve_slice(k, 0.0, should_stop=ctx.should_stop))
            if need_mg:
                # a cold start, as `detect` solves it: what the slider shows for a value it asked for is what the
                # whole-volume run and the command line give
                r = sess.solve_slice(k, eps, should_stop=ctx.should_stop, on_progress=lambda p: ctx.emit("partial", p))
                ctx.emit("final", r)
            for j in ahead:  # the neighbours at this eps, nearest in the scrolling direction first
                ctx.follow_up.append(lambda c, j=j: self._solve_ahead(c, sess, j, eps))
            if grid:
                ctx.follow_up.append(
                    lambda c: sess.precompute(k, grid, lambda r: c.emit("cached", r), should_stop=c.should_stop)
                )

        want.gen = lane.submit(job)
        return want.gen

    def _solve_ahead(self, ctx: JobContext, sess: ModelSession, j: int, eps: float) -> None:
        """Slice j at eps, solved ahead of the reader (on the worker). A newer request stops it only when that
        request no longer wants it (the reader jumped elsewhere, changed eps or the study): scrolling on to the
        next slice lets the solve of the one after it finish instead of starting it over."""
        key = (j, eps)
        with self._ahead_lock:
            self._ahead_running.add(key)
        try:
            r = sess.solve_slice(j, eps, should_stop=lambda: ctx.should_stop() and key not in self._ahead_wanted)
        finally:
            with self._ahead_lock:
                self._ahead_running.discard(key)
        ctx.emit("cached", r)

    def _neighbours(self, k: int) -> list[int]:
        """The slices to solve ahead of the reader after slice k (none unless :attr:`prefetch_slices`): the next
        :data:`PREFETCH_AHEAD` in the direction of the last move along the slices (up until the reader moves),
        then :data:`PREFETCH_BEHIND` the other way, inside the study."""
        if self._last_slice is not None and k != self._last_slice:
            self._scroll = 1 if k > self._last_slice else -1
        self._last_slice = k
        if not self.prefetch_slices:
            return []
        step, n = self._scroll, self.session.slices.n_slices
        ahead = [k + step * i for i in range(1, PREFETCH_AHEAD + 1)]
        behind = [k - step * i for i in range(1, PREFETCH_BEHIND + 1)]
        return [j for j in ahead + behind if 0 <= j < n]

    def _show_saved(self) -> None:
        """The current slice of the saved batch result: nothing is computed."""
        self.lanes["slice"].cancel()
        self.want = None
        name = self.session.name if self.session is not None else self.saved.model
        r = self.saved.slice_result(self.state.slice_index, name)
        self.shown = r
        self.events.result.emit(Shown(r, True, "saved batch result", cached=True))
        self.timing = "saved batch result (no computation)"
        self.events.timing.emit(self.timing)
        maps = "mask and maps" if self.saved.d is not None else "mask only (batch without --maps)"
        self.events.info.emit(f"{describe(r)} - saved by batch: {maps}")
        return None

    def _on_slice_report(self, gen: int, kind: str, r: Any) -> None:
        if gen <= self._floor or self.session is None:
            return  # an earlier study's or model's job
        if kind == "unfit":
            self.session = None
            self.events.session.emit(None)
            self._error("Study does not fit the model", str(r))
            return
        if kind == "prepared":
            self._prepared_report()
            return
        if not isinstance(r, SliceResult) or r.model != self.session.name:
            return
        key = ResultCache.key(r.model, r.slice_index, r.eps)
        want = self.want.key if self.want is not None else None
        if kind in ("final", "cached"):
            self.cache.put(r)
            if key == want:
                self._show(r, final=True)
            elif kind == "final" and r.eps == 0 and want is not None and want[:2] == key[:2]:
                sh = self.shown
                if sh is None or sh.slice_index != r.slice_index or sh.model != r.model:
                    self._show(r, final=False, note="+MG running...")  # the new slice's base model, meanwhile
        elif kind == "partial" and gen == self.lanes["slice"].generation and key == want:
            self._show(r, final=False, note=f"converging: step {r.steps}")

    def _show(self, r: SliceResult, final: bool, note: str = "", cached: bool = False) -> None:
        """Hand a result to the views; once a final one is on screen (the views render synchronously), the
        timing figure: the time from the request that wanted it to now."""
        self.shown = r
        self.events.result.emit(Shown(r, final, note, cached))
        what = describe(r)
        if not final:
            self.events.info.emit(f"{what}\n{note}")
            return
        elapsed = self.clock() - self.want.t0 if self.want is not None else 0.0
        if cached:
            self.timing = f"cached ({r.steps} steps) | shown after {elapsed:.2f} s"
        else:
            self.timing = f"solve {r.seconds:.2f} s, {r.steps} steps | shown after {elapsed:.2f} s"
        self.events.timing.emit(self.timing)
        how = " (precomputed with the eps grid)" if r.precomputed else ""
        solved = f", {r.seconds:.2f} s" if r.seconds else ""
        cap = self.session.solver.loss_cap if self.session is not None else None
        loss = "L1 loss" if cap is None else f"L1 loss (capped at {cap:g})"
        self.events.info.emit(f"{what}{how}\n{loss} {r.loss:.4f}, {r.steps} steps{solved}")

    # --- what the views ask -------------------------------------------------------------------------------------
    def detection(self) -> tuple[np.ndarray | None, float | None]:
        """RGBA overlay of the shown result at the current tau and opacity, and the slice Dice (or None)."""
        r, sl = self.shown, self.state.study
        if r is None or sl is None:
            return None, None
        gt = sl.gt_slice(self.state.slice_index)
        return detection_overlay(r.d, self.state.tau, gt, self.state.overlay_opacity, self.shown_detection())

    def shown_detection(self) -> np.ndarray | None:
        """The detection on the shown result's slice (X, Y) as the detection panel shows it: the saved batch mask
        (:meth:`saved_mask`), else D > tau without the components the card's rule drops; the pixel readout says
        "detected" by the same mask. None without a shown result."""
        r = self.shown
        if r is None:
            return None
        saved, tau, sess = self.saved_mask(), self.state.tau, self.session
        cached = self._shown_detection  # the readout asks on every mouse move: labelled once per result and tau
        if cached is None or cached[0] is not r or cached[1] != tau or cached[2] is not saved or cached[3] is not sess:
            pred = saved[:, :, r.slice_index] if saved is not None else self.mask_at(r.d, tau)
            cached = self._shown_detection = (r, tau, saved, sess, np.asarray(pred, dtype=bool))
        return cached[4]

    def saved_mask(self) -> np.ndarray | None:
        """The mask a batch wrote, while its saved result is shown at its own tau (X, Y, Z): what the worklist's
        findings are, including a screening detection's reporting cut (findings whose peak D does not pass it are
        outlined at tau but were not reported, so D > tau would show them); None otherwise."""
        sv = self.saved
        if sv is None or not math.isclose(self.state.tau, sv.tau, rel_tol=1e-9, abs_tol=1e-12):
            return None
        return sv.mask

    def volume_detection(self) -> np.ndarray | None:
        """The detection of the current volume result (X, Y, Z) as the reader is shown it: the saved batch mask
        (:meth:`saved_mask`), else D > tau with the card's component rule; None without a volume result of the
        current study."""
        sl, vol = self.state.study, self.volume
        if sl is None or vol is None or getattr(vol, "study", None) is not sl:
            return None
        saved = self.saved_mask()
        return saved if saved is not None else self.mask_at(vol.d, self.state.tau)

    def mask_at(self, d: np.ndarray, tau: float) -> np.ndarray:
        """The detection on the study grid as ``detect`` makes it: D > tau and the card's component rule (a pure
        function of its arguments and the model session: safe on a worker thread)."""
        return np.asarray(d) > tau if self.session is None else self.session.detection(d, tau)

    def hover(self, x: int, y: int) -> str:
        """The mouse is over voxel (x, y) of the current slice (x < 0: it left the images): tells the views
        (``events.cursor``, e.g. orthogonal views following the crosshair) and returns the status-bar line."""
        inside = x >= 0 and self.state.study is not None
        self.events.cursor.emit((int(x), int(y), self.state.slice_index) if inside else None)
        return self.readout(x, y)

    def readout(self, x: int, y: int) -> str:
        """The status-bar line for voxel (x, y) of the current slice ('' outside)."""
        sl = self.state.study
        if x < 0 or sl is None:
            return ""
        k = self.state.slice_index
        raw = sl.raw_slice(k)[x, y]
        parts = [f"voxel ({x}, {y}, {k})", f"input {_values(raw, 2)}"]
        r = self.shown
        if r is not None and r.slice_index == k:
            parts.append(f"pseudo-normal {_values(r.s[x, y], 3)}")
            parts.append(f"D {r.d[x, y]:.3f}")
            parts.append("detected" if self.shown_detection()[x, y] else "not detected")
        gt = sl.gt_slice(k)
        if gt is not None:
            parts.append("GT lesion" if gt[x, y] else "GT normal")
        return " | ".join(parts)

    # --- whole volume and saving --------------------------------------------------------------------------------
    def run_volume(self, save_to: str | None = None, tau: float | None = None) -> int | None:
        """Every slice at the current model and eps (the base model with +MG off), on the volume lane, through the
        shared ``Detector.run``; with ``save_to`` the mask D > tau (default: the current tau) is saved when it ends."""
        sess, sl = self.session, self.state.study
        if sess is None or sess.slices is None or sl is None:
            self._error("Nothing to run", "open a study and choose a model first")
            return None
        mg = self.state.use_mg
        eps = self.wanted_eps()
        slices = sess.slices
        keep = self._slices_to_keep(sl)

        def job(ctx: JobContext) -> None:
            t0 = time.perf_counter()
            results: list[SliceResult] = []
            if not slices.is_prepared:
                slices.prepare()  # off the GUI thread, as in the slice job
                ctx.emit("prepared", None)
            d = sess.run_volume(
                eps,
                base_only=not mg,
                progress=lambda done, total: ctx.emit("progress", done / max(total, 1)),
                should_stop=ctx.should_stop,
                batch_size=VOLUME_BATCH,
                results=results,
                result_slices=keep,
            )
            ctx.emit("volume", (VolumeResult(sess.name, eps, d, time.perf_counter() - t0, sl), results))

        gen = self.lanes["volume"].submit(job)
        save_tau = None if save_to is None else (self.state.tau if tau is None else float(tau))
        self.volume_run = VolumeRun(gen, sess.name, eps, save_to, save_tau)
        self.events.volume_running.emit(True)
        self.events.volume_progress.emit(0.0)
        return gen

    def _slices_to_keep(self, sl: StudySlices) -> list[int]:
        """The slices of a volume run whose results fit the cache's budget: those nearest the current slice,
        farthest first (so the nearest end up most recently used and are dropped last)."""
        x, y = sl.slice_shape
        channels = 1 if self.session is None else self.session.input.channels
        per = x * y * 4 * (channels + 1)  # float32 pseudo-normal and difference map
        n = max(1, min(sl.n_slices, self.cache.max_bytes // max(per, 1)))
        k0 = self.state.slice_index
        near = sorted(range(sl.n_slices), key=lambda k: (abs(k - k0), k))[:n]
        return sorted(near, key=lambda k: (-abs(k - k0), -k))

    def cancel_volume(self, quiet: bool = False) -> None:
        """Stop the whole-volume run; a save waiting for it is dropped with it."""
        self.lanes["volume"].cancel()
        self.volume_run = None
        self.events.volume_running.emit(False)
        self.events.volume_progress.emit(0.0)
        if not quiet:
            self.events.status.emit("whole-volume run cancelled")

    def _on_volume_report(self, gen: int, kind: str, payload: Any) -> None:
        run = self.volume_run
        if run is None or gen != run.gen or gen != self.lanes["volume"].generation:
            return  # a cancelled or replaced run
        if kind == "progress":
            self.events.volume_progress.emit(float(payload))
            return
        if kind == "prepared":
            self._prepared_report()
            return
        if kind != "volume":
            return
        vol, results = payload
        self.volume_run = None
        self.volume = vol
        if self.session is not None and vol.model == self.session.name and vol.study is self.state.study:
            for r in results:  # browsing the volume at this eps is now instant (as far as the cache's budget goes)
                self.cache.put(r)
        self.events.volume_progress.emit(1.0)
        self.events.volume_running.emit(False)
        n = vol.d.shape[2]
        self.timing = f"volume: {vol.seconds:.1f} s ({vol.seconds / max(n, 1):.3f} s/slice)"
        self.events.timing.emit(self.timing)
        self.events.volume_done.emit(vol)
        if run.save_path:
            self._write_mask(run.save_path, run.save_tau)
        # the value the user waits for may now be in the cache: show it (a request would find it there)
        want, sh = self.want, self.shown
        if want is not None and want.key in self.cache:
            if sh is None or want.key != ResultCache.key(sh.model, sh.slice_index, sh.eps):
                self.request()

    def save_mask(self, path: str, tau: float | None = None) -> bool:
        """Save D > tau of the whole volume on the study's original grid. Runs the volume first if it has not run
        for the current model and eps (or joins the run in progress); True when written now."""
        sess, sl = self.session, self.state.study
        if sess is None or sl is None:
            self._error("Nothing to save", "open a study and choose a model first")
            return False
        eps = self.wanted_eps()
        tau = self.state.tau if tau is None else float(tau)
        if self.volume is not None and self.volume.matches(sess.name, eps, sl):
            return self._write_mask(path, tau)
        run = self.volume_run
        if run is not None and run.model == sess.name and abs(run.eps - eps) <= 1e-9:
            run.save_path, run.save_tau = str(path), tau  # the run in progress saves when it ends
            return False
        self.run_volume(save_to=str(path), tau=tau)
        return False

    def _write_mask(self, path: str, tau: float) -> bool:
        from app.io import save_mask
        from app.viewer.study_run import preprocessing_record, write_beside

        vol, sl = self.volume, self.state.study
        try:
            if str(path).lower().endswith(".dcm"):  # a DICOM SEG over the source series (DICOM studies only)
                from app.io.seg import write_seg
                from app.viewer.dicom_out import session_algorithm

                out = write_seg(sl.study, self.mask_at(vol.d, tau), path, session_algorithm(self.session, vol.eps, tau))
            else:
                out = save_mask(sl.study, self.mask_at(vol.d, tau), path)
            # the brain mask and the preprocessing record beside it, as detect and batch write them
            prep = self.session.prepared()
            record = preprocessing_record(
                sl.study, prep, self.session.model_facts(), vol.eps, tau, base_only=vol.eps == 0,
                timings={"volume_s": round(vol.seconds, 3)},
            )  # fmt: skip
            brain, _rec = write_beside(sl.study, prep, path, record)
        except (MatchGenError, OSError) as exc:
            self._error("Cannot save mask", str(exc))
            return False
        extra = f" and the brain mask {brain.name}" if brain is not None else ""
        self.events.status.emit(f"saved {out}{extra}")
        self.events.saved.emit(Path(out))
        return True

    # --- Figure 2 -----------------------------------------------------------------------------------------------
    def export_figure(
        self, models: list[str] | None, path: str, eps: float | None = None, tau: float | None = None
    ) -> int | None:
        """Figure-2 layout of the current slice (the code of ``python main.py figure``) on the export lane: it
        neither waits for nor cancels the whole-volume run."""
        sess, sl = self.session, self.state.study
        if sess is None or sl is None:
            self._error("Nothing to export", "open a study and choose a model first")
            return None
        if self.figure_writer is None:
            self._error("Figure export failed", "no figure writer configured (app.figure.write_figure2)")
            return None
        names = [n for n in (models or []) if n] or [sess.name]
        k, device, write = self.state.slice_index, self.device, self.figure_writer

        def job(ctx: JobContext) -> None:
            out, _cols = write(sl, k, names, path, device, eps=eps, tau=tau)
            ctx.emit("figure", out)

        gen = self.lanes["export"].submit(job)
        self.export_job = ExportJob(gen, str(path), names)
        self.events.export_running.emit(True)
        self.events.status.emit(f"exporting Figure 2 ({', '.join(names)})...")
        return gen

    def _on_export_report(self, gen: int, kind: str, payload: Any) -> None:
        job = self.export_job
        if job is None or gen != job.gen or kind != "figure":
            return
        self.export_job = None
        self.events.export_running.emit(False)
        self.events.status.emit(f"wrote {payload}")
        self.events.export_done.emit(Path(payload))

    # --- lane reports (the GUI delivers them on its thread) -----------------------------------------------------
    def report(self, lane: str, gen: int, kind: str, payload: Any) -> None:
        if lane == "slice":
            self._on_slice_report(gen, kind, payload)
        elif lane == "volume":
            self._on_volume_report(gen, kind, payload)
        elif lane == "export":
            self._on_export_report(gen, kind, payload)
        elif lane == "load" and kind == "study" and gen == self._load_gen:
            self.loading = None
            self.events.loading.emit(None)
            slices, path, seconds = payload
            self.set_study(slices, path, seconds)

    def failed(self, lane: str, gen: int, message: str) -> None:
        if lane == "slice":
            if gen == self.lanes["slice"].generation and gen > self._floor:
                self._error("Computation failed", message)
        elif lane == "volume":
            if self.volume_run is not None and gen == self.volume_run.gen:
                self.volume_run = None
                self.events.volume_running.emit(False)
                self._error("Whole-volume run failed", message)
        elif lane == "export":
            if self.export_job is not None and gen == self.export_job.gen:
                self.export_job = None
                self.events.export_running.emit(False)
                self._error("Figure export failed", message)
        elif lane == "load" and gen == self._load_gen:
            self.loading = None
            self.events.loading.emit(None)
            self._error("Cannot open study", message)

    def is_idle(self) -> bool:
        return all(lane.is_idle() for lane in self.lanes.values())


def _values(v, digits: int) -> str:
    """A voxel's value (or its channels' values) with ``digits`` decimals: a float32 formatted as it is would print
    its binary expansion (0.5120000243186951)."""
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        return f"{float(a):.{digits}f}"
    return "(" + ", ".join(f"{float(c):.{digits}f}" for c in a.ravel()) + ")"
