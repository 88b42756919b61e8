"""From a batch worklist to the viewer, Qt-free: open a batch output folder, open its studies one after another at
their most abnormal slice with their saved results (no model run), and keep the findings list of the current study
(from the saved result, or from a whole-volume run at the current tau).

It drives a :class:`app.viewer.controller.ViewerController` through its public calls and events, plus one
attribute the controller honours: ``ctl.saved`` -- while set, the controller answers every slice request from the
saved result instead of the model. It is set when a worklist study opens and cleared as soon as the user asks for
something the batch did not compute (another eps, +MG toggled, another model, another study).

A worklist folder is read on its own lane (:mod:`app.viewer.jobs`; the GUI gives a worker thread, tests a
:class:`~app.viewer.jobs.ManualLane`): one ``result.json`` per study is too much for the GUI thread once an archive
holds thousands. A newer open replaces one still being read, and only the newest read is shown.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from app.errors import MatchGenError
from app.viewer.findings import FindingsList, SavedResult
from app.viewer.jobs import JobContext, Lane, ManualLane
from app.viewer.worklist import Worklist, WorklistEntry


class WorklistSession:
    def __init__(self, ctl, lane: Lane | None = None, findings_lane: Lane | None = None):
        self.ctl = ctl
        self.state = ctl.state
        self.worklist: Worklist | None = None
        #: the folder being read (None when no read is under way)
        self.reading: str | None = None
        self.pending: WorklistEntry | None = None
        self.current: WorklistEntry | None = None
        self.saved: SavedResult | None = None
        self.findings: FindingsList | None = None
        #: callbacks (no Qt signals here): findings(FindingsList | None), opened(WorklistEntry),
        #: worklist(Worklist) when a read is done, reading((folder, done, total) | None) while one is under way
        self.on_findings: list[Callable] = []
        self.on_opened: list[Callable] = []
        self.on_worklist: list[Callable] = []
        self.on_reading: list[Callable] = []
        self.lane: Lane = lane or ManualLane("worklist")
        self.lane.listen(self._report, self._failed)
        # the findings of a volume result at a new tau: the whole volume labelled again (0.05 s for the demo, about
        # ten times that for a 256x256x180 study), so the GUI gives a worker thread; without one they are computed
        # at once, on the caller's thread
        self.findings_lane = findings_lane
        if findings_lane is not None:
            findings_lane.listen(self._findings_report, self._findings_failed)
        self._findings_gen = 0
        #: True from a tau change until its findings arrive from the findings lane (with them, the detection as drawn:
        #: the findings' labels > 0, which views of the whole volume can show instead of computing it again)
        self.findings_pending = False
        self._read_gen = 0
        self._quiet = False
        self._open_top = False
        self._installing = False
        ctl.events.study_opened.connect(self._study_opened)
        ctl.events.volume_done.connect(self._volume_done)
        ctl.events.session.connect(lambda _s: self._user_changed())
        self.state.events.eps.connect(lambda _e: self._user_changed())
        self.state.events.use_mg.connect(lambda _b: self._user_changed())
        self.state.events.tau.connect(lambda _t: self._tau_changed())

    # --- the worklist -------------------------------------------------------------------------------------------
    def open_folder(
        self, folder: str | os.PathLike, keep_view: bool = False, quiet: bool = False, open_top: bool = False
    ) -> int:
        """Read a batch output folder on the lane; ``on_worklist`` hears when it is done, ``ctl.events.error`` when
        it cannot be read (``quiet``: the status bar only, for a read nobody asked for). With ``keep_view`` the new
        list keeps the current one's order and study (a reload); with ``open_top`` its first analysed study (the
        most abnormal) then opens, as a double-click on it would. Returns the read's generation."""
        folder = str(folder)
        keep = self.worklist if keep_view else None
        sort = (keep.sort_key, keep.descending) if keep is not None else None
        current_id = keep.entries[keep.current].id if keep is not None and keep.current is not None else None

        def job(ctx: JobContext) -> None:
            t0 = time.perf_counter()
            wl = Worklist(folder, should_stop=ctx.should_stop, progress=lambda i, n: ctx.emit("progress", (i, n)))
            if sort is not None and sort != (wl.sort_key, wl.descending):
                wl.sort_by(*sort)
            if current_id is not None:
                wl.current = next((i for i, e in enumerate(wl.entries) if e.id == current_id), None)
            ctx.emit("worklist", (wl, time.perf_counter() - t0))

        self._read_gen = self.lane.submit(job)
        self._quiet = quiet
        self._open_top = open_top and not keep_view
        self._set_reading((folder, 0, 0))
        return self._read_gen

    def reload(self, quiet: bool = False) -> int | None:
        """Read the open worklist's folder again (a batch still running has finished more studies since), in the
        same order and at the same study; None when no worklist is open."""
        if self.worklist is None:
            return None
        return self.open_folder(self.worklist.folder, keep_view=True, quiet=quiet)

    def refresh(self) -> int | None:
        """What the viewer's timer calls every ``refresh_s`` of the open worklist (as often as its batch writes its
        lists, :func:`app.viewer.worklist.refresh_interval`): reload the open worklist if its batch has not finished
        and no read is under way (None otherwise). A folder that can no longer be read then says so in the status
        bar, not in a dialog every minute."""
        wl = self.worklist
        if wl is None or wl.unfinished is None or self.reading is not None:
            return None
        return self.reload(quiet=True)

    def _report(self, gen: int, kind: str, payload) -> None:
        if gen != self._read_gen or self.reading is None:
            return  # an older read, replaced by a newer one
        if kind == "progress":
            self._set_reading((self.reading, *payload))
        elif kind == "worklist":
            wl, seconds = payload
            self.worklist = wl
            self._set_reading(None)
            n = sum(e.ok for e in wl.entries)
            self.ctl.events.status.emit(f"worklist {wl.folder.name}: {n} studies read in {seconds:.2f} s")
            top = next((i for i, e in enumerate(wl.entries) if e.ok), None) if self._open_top else None
            if top is not None:
                wl.current = top
            for cb in self.on_worklist:
                cb(wl)
            if top is not None:
                self.open_entry(wl.entries[top])

    def _failed(self, gen: int, message: str) -> None:
        if gen != self._read_gen or self.reading is None:
            return
        self._set_reading(None)
        if self._quiet:
            self.ctl.events.status.emit(f"Cannot read the worklist again: {message.splitlines()[0]}")
        else:
            self.ctl.events.error.emit(("Cannot open worklist", message))

    def _set_reading(self, what: tuple | None) -> None:
        self.reading = None if what is None else what[0]
        for cb in self.on_reading:
            cb(what)

    def open_entry(self, entry: WorklistEntry) -> None:
        """Load the entry's study; when it is on screen, show its saved result at its most abnormal slice."""
        if not entry.ok:
            raise MatchGenError(f"{entry.id}: the batch could not analyse this study ({entry.error})")
        self.pending = entry
        self.ctl.open_study(entry.study_path())

    def step(self, delta: int) -> WorklistEntry | None:
        if self.worklist is None:
            return None
        e = self.worklist.step(delta)
        if e is not None:
            self.open_entry(e)
        return e

    # --- events -------------------------------------------------------------------------------------------------
    def _study_opened(self, slices) -> None:
        entry, self.pending = self.pending, None
        self._clear_saved()
        if entry is None or Path(str(slices.study.source)).resolve() != Path(entry.study_path()).resolve():
            self.current = None
            self._set_findings(None)
            return
        try:
            saved = SavedResult.load(entry, slices.study)
        except MatchGenError as exc:
            self.ctl.events.error.emit(("Cannot show the saved result", str(exc)))
            return
        self.current = entry
        self._install(saved, slices)
        for cb in self.on_opened:
            cb(entry)

    def _install(self, saved: SavedResult, slices) -> None:
        from app.viewer.controller import VolumeResult

        self._installing = True
        try:
            self.ctl.saved = saved
            sess = self.ctl.session
            if saved.model and (sess is None or sess.name != saved.model):
                from app.nets.zoo import zoo_names

                # to compute on from here (another eps, another tau is free)
                if saved.model in zoo_names():
                    self.ctl.set_model(saved.model)
            st = self.state
            if saved.eps > st.eps_max:
                st.eps_max = saved.eps
            st.use_mg = saved.eps > 0
            st.eps = saved.eps
            st.tau = saved.tau
            self.ctl.volume = VolumeResult(saved.model, saved.eps, saved.d_volume(), 0.0, slices)
            self.saved = saved
            self._set_findings(saved.findings)
            if st.slice_index != saved.peak_slice:
                st.slice_index = saved.peak_slice
            else:
                self.ctl.request()
            cut = saved.result.get("report_above")
            reported = "" if cut is None else f", findings reported above peak D {float(cut):g}"
            self.ctl.events.status.emit(
                f"saved batch result: {saved.model} eps={saved.eps:g} tau={saved.tau:g}{reported}, score "
                f"(peak D) {float(saved.result.get('score') or 0):.3g} at slice {saved.peak_slice}"
            )
        finally:
            self._installing = False

    def _clear_saved(self) -> None:
        self.saved = None
        if getattr(self.ctl, "saved", None) is not None:
            self.ctl.saved = None

    def _user_changed(self) -> None:
        if self._installing or self.saved is None:
            return
        self._clear_saved()  # the user asks for something the batch did not compute: the controller computes it
        self.ctl.request()

    def _volume_done(self, vol) -> None:
        if self.state.study is None or vol.study is not self.state.study:
            return
        self._recompute_findings("volume run")

    def _tau_changed(self) -> None:
        self.findings_pending = False  # until a findings job is submitted for this tau below
        if self._installing:
            return
        if self.saved is not None and self.saved.d is None:
            return  # a mask-only result: its findings are the saved ones
        src = "result.json, at the new tau" if self.saved is not None else "volume run"
        self._recompute_findings(src)

    def _recompute_findings(self, source: str) -> None:
        """The findings of the current volume result as drawn at the current tau (the card's component rule, or the
        saved mask while its tau is shown): on the findings lane when there is one, and only the newest is shown."""
        vol, study = self.ctl.volume, self.state.study
        if vol is None or study is None or vol.study is not study:
            self.findings_pending = False
            return
        d, tau, affine, saved = vol.d, self.state.tau, study.study.affine, self.ctl.saved_mask()
        mask_at = self.ctl.mask_at

        def compute() -> FindingsList:
            shown = saved if saved is not None else mask_at(d, tau)
            return FindingsList.from_volume(d, tau, affine, source, mask=shown)

        if self.findings_lane is None:
            self._set_findings(compute())
            return

        def job(ctx: JobContext) -> None:
            ctx.emit("findings", (compute(), tau, vol))

        self._findings_gen = self.findings_lane.submit(job)
        self.findings_pending = True

    def _findings_report(self, gen: int, kind: str, payload) -> None:
        fl, tau, vol = payload
        if gen != self._findings_gen or tau != self.state.tau or vol is not self.ctl.volume:
            return  # an older tau or volume: a newer computation is on its way
        self.findings_pending = False
        self._set_findings(fl)

    def _findings_failed(self, gen: int, message: str) -> None:
        if gen == self._findings_gen:
            self.findings_pending = False
            self.ctl.events.status.emit(f"findings: {message.splitlines()[0]}")

    def _set_findings(self, fl: FindingsList | None) -> None:
        self.findings = fl
        for cb in self.on_findings:
            cb(fl)

    # --- the findings list --------------------------------------------------------------------------------------
    def choose_finding(self, i: int):
        """Select finding ``i``: the view jumps to its centre slice (the outline is :meth:`outline`)."""
        if self.findings is None:
            return None
        f = self.findings.select(i)
        self.state.slice_index = f.centre_slice
        return f

    def outline(self, k: int):
        return None if self.findings is None else self.findings.outline_on(k)
