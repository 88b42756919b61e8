"""A worker thread that runs one job at a time; only the newest request counts.

Requests carry a generation number. Submitting a new request bumps the generation, which makes the running
job's ``should_stop()`` return True at the solver's next step (it then raises Cancelled and is dropped), and
replaces any request still waiting. Jobs report through ``emit(kind, payload)``; the signal carries the
generation so the GUI shows only what belongs to its newest request. A job may queue a *background* follow-up
(e.g. precomputing the eps grid), which runs only while nothing newer is waiting and is cancelled the same way.

Jobs are plain callables ``job(ctx)`` from :mod:`app.viewer`-level code; this module only moves them to a thread.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.errors import Cancelled, MatchGenError
from app.viewer.jobs import JobContext

__all__ = ["Invoker", "JobContext", "SolveWorker"]


class Invoker(QObject):
    """Runs callables on the thread this object lives in (the GUI thread): ``post(fn)`` from any thread. The
    :class:`app.viewer.jobs.ExecutorLane` of the window hands its reports over with it."""

    _call = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._call.connect(self._run)

    def post(self, fn) -> None:
        self._call.emit(fn)

    @Slot(object)
    def _run(self, fn) -> None:
        fn()


class SolveWorker(QThread):
    #: (generation, kind, payload): intermediate and final results, progress, ...
    report = Signal(int, str, object)
    #: (generation, message): a job failed with a readable message
    failed = Signal(int, str)
    #: True while a job (foreground or background) runs
    busy_changed = Signal(bool)

    def __init__(self, name: str = "solver", parent=None):
        super().__init__(parent)
        self.setObjectName(name)
        self._cond = threading.Condition()
        self._gen = 0
        self._pending: tuple[int, Callable] | None = None
        self._background: list[tuple[int, Callable]] = []
        self._quit = False
        self._running_gen: int | None = None

    # --- called from the GUI thread --------------------------------------------------------------------------
    def listen(self, on_report, on_failed) -> None:
        """The lane protocol of :mod:`app.viewer.jobs`: reports and failures reach the callbacks on the GUI thread
        (this object lives there, so the connections are queued)."""
        self._listeners = (on_report, on_failed)
        self.report.connect(self._deliver_report)
        self.failed.connect(self._deliver_failed)

    @Slot(int, str, object)
    def _deliver_report(self, gen: int, kind: str, payload) -> None:
        self._listeners[0](gen, kind, payload)

    @Slot(int, str)
    def _deliver_failed(self, gen: int, message: str) -> None:
        self._listeners[1](gen, message)

    def submit(self, job: Callable[[JobContext], None]) -> int:
        """Queue ``job`` as the newest request (cancelling older ones); returns its generation."""
        with self._cond:
            self._gen += 1
            self._pending = (self._gen, job)
            self._background.clear()
            self._cond.notify_all()
            return self._gen

    def cancel(self) -> None:
        """Drop whatever runs or waits."""
        with self._cond:
            self._gen += 1
            self._pending = None
            self._background.clear()

    @property
    def generation(self) -> int:
        return self._gen

    def is_idle(self) -> bool:
        with self._cond:
            return self._pending is None and not self._background and self._running_gen is None

    def stop(self, timeout_ms: int = 5000) -> bool:
        """Cancel everything and end the thread (the running job stops at the solver's next step)."""
        with self._cond:
            self._quit = True
            self._gen += 1
            self._pending = None
            self._background.clear()
            self._cond.notify_all()
        return self.wait(timeout_ms) if self.isRunning() else True

    # --- the thread -----------------------------------------------------------------------------------------
    def _stale(self, gen: int) -> bool:
        return self._quit or gen != self._gen

    def run(self) -> None:  # noqa: C901 - one loop, read top to bottom
        while True:
            with self._cond:
                while self._pending is None and not self._background and not self._quit:
                    self._cond.wait()
                if self._quit:
                    return
                if self._pending is not None:
                    gen, job = self._pending
                    self._pending = None
                else:
                    gen, job = self._background.pop(0)
                self._running_gen = gen
            self.busy_changed.emit(True)
            ctx = JobContext(
                gen=gen,
                should_stop=lambda g=gen: self._stale(g),
                emit=lambda kind, payload, g=gen: self.report.emit(g, kind, payload),
            )
            try:
                job(ctx)
            except Cancelled:
                pass
            except MatchGenError as exc:
                if not self._stale(gen):
                    self.failed.emit(gen, str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the thread; the GUI shows it
                if not self._stale(gen):
                    tb = traceback.format_exc(limit=3)
                    self.failed.emit(gen, f"internal error in the worker: {type(exc).__name__}: {exc}\n\n{tb}")
            finally:
                with self._cond:
                    if ctx.follow_up and not self._stale(gen) and self._pending is None:
                        self._background.extend((gen, j) for j in ctx.follow_up)
                    self._running_gen = None
                    idle = self._pending is None and not self._background
                if idle:
                    self.busy_changed.emit(False)
