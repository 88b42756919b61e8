"""Job lanes: where the viewer's controller sends work that must not run on the GUI thread.

A *lane* runs one job at a time and only the newest request counts. ``submit(job)`` bumps the lane's generation
number, replaces any job still waiting and makes the running job's ``ctx.should_stop()`` return True (the solver
then stops at its next step). Jobs are plain callables ``job(ctx)``; they report through ``ctx.emit(kind,
payload)`` and may queue background follow-ups (``ctx.follow_up``) that run only while nothing newer waits.
Every report carries the generation of the job that made it, so the controller drops what belongs to an older
request (stale results are never shown).

The lane protocol (``submit``, ``cancel``, ``generation``, ``is_idle``, ``listen``) has three implementations:

* :class:`app.gui.worker.SolveWorker` -- a QThread; reports reach the GUI thread through queued signals;
* :class:`ExecutorLane` -- a plain thread (joined at exit, never aborted), reports handed to a ``post`` function
  that moves them to the caller's thread (the GUI passes a Qt invoker, a script can pass ``lambda f: f()``);
* :class:`ManualLane` -- runs jobs only when told to (``run()``), on the calling thread: the controller's tests
  drive it step by step, e.g. to deliver an old request's result after a newer request was made.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.errors import Cancelled, MatchGenError

ReportFn = Callable[[int, str, Any], None]
FailedFn = Callable[[int, str], None]


@dataclass
class JobContext:
    gen: int
    should_stop: Callable[[], bool]
    emit: Callable[[str, Any], None]
    follow_up: list = field(default_factory=list)  # background jobs to run after this one, in order


class Lane(Protocol):
    def submit(self, job: Callable[[JobContext], None]) -> int: ...
    def cancel(self) -> None: ...
    @property
    def generation(self) -> int: ...
    def is_idle(self) -> bool: ...
    def listen(self, on_report: ReportFn, on_failed: FailedFn) -> None: ...


def failure_message(exc: BaseException) -> str:
    """What a failed job reports: a user's error as it is, a bug with its type and a short traceback."""
    if isinstance(exc, MatchGenError):
        return str(exc)
    tb = traceback.format_exc(limit=3)
    return f"internal error in the worker: {type(exc).__name__}: {exc}\n\n{tb}"


class _Queue:
    """Generation bookkeeping shared by the lanes (not thread-safe by itself; callers hold ``cond``)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.gen = 0
        self.pending: tuple[int, Callable] | None = None
        self.background: list[tuple[int, Callable]] = []
        self.running: int | None = None
        self.quit = False

    def submit(self, job) -> int:
        with self.cond:
            self.gen += 1
            self.pending = (self.gen, job)
            self.background.clear()
            self.cond.notify_all()
            return self.gen

    def cancel(self) -> None:
        with self.cond:
            self.gen += 1
            self.pending = None
            self.background.clear()

    def stale(self, gen: int) -> bool:
        return self.quit or gen != self.gen

    def take(self):
        """The next (gen, job) or None; marks it running."""
        with self.cond:
            if self.pending is not None:
                item, self.pending = self.pending, None
            elif self.background:
                item = self.background.pop(0)
            else:
                return None
            self.running = item[0]
            return item

    def done(self, gen: int, ctx: JobContext) -> None:
        with self.cond:
            if ctx.follow_up and not self.stale(gen) and self.pending is None:
                self.background.extend((gen, j) for j in ctx.follow_up)
            self.running = None

    def idle(self) -> bool:
        with self.cond:
            return self.pending is None and not self.background and self.running is None


def run_job(q: _Queue, gen: int, job, report: ReportFn, failed: FailedFn) -> None:
    """One job with its context; Cancelled is silent, failures of a current job are reported."""
    ctx = JobContext(gen=gen, should_stop=lambda: q.stale(gen), emit=lambda kind, payload: report(gen, kind, payload))
    try:
        job(ctx)
    except Cancelled:
        pass
    except Exception as exc:  # noqa: BLE001 - a bug must not kill the lane; the GUI shows it
        if not q.stale(gen):
            failed(gen, failure_message(exc))
    finally:
        q.done(gen, ctx)


class ManualLane:
    """A lane whose jobs run when :meth:`run` (or :meth:`step`) is called, on the calling thread.

    Reports are queued and handed to the listener by :meth:`deliver` (``run`` does both), as a GUI's event loop
    would deliver them after the fact."""

    def __init__(self, name: str = "manual"):
        self.name = name
        self._q = _Queue()
        self._outbox: list[tuple] = []
        self._on_report: ReportFn = lambda *a: None
        self._on_failed: FailedFn = lambda *a: None
        self.submitted = 0  # how many jobs were ever submitted (tests count solver requests with it)

    def listen(self, on_report: ReportFn, on_failed: FailedFn) -> None:
        self._on_report, self._on_failed = on_report, on_failed

    def submit(self, job) -> int:
        self.submitted += 1
        return self._q.submit(job)

    def cancel(self) -> None:
        self._q.cancel()

    @property
    def generation(self) -> int:
        return self._q.gen

    def is_idle(self) -> bool:
        return self._q.idle()

    def step(self) -> bool:
        """Run the next job (reports stay queued); False when there was none."""
        item = self._q.take()
        if item is None:
            return False
        gen, job = item
        run_job(
            self._q,
            gen,
            job,
            lambda g, k, p: self._outbox.append(("report", g, k, p)),
            lambda g, m: self._outbox.append(("failed", g, m)),
        )
        return True

    def deliver(self) -> int:
        """Hand the queued reports to the listener, oldest first; returns how many."""
        n = 0
        while self._outbox:
            what, *args = self._outbox.pop(0)
            (self._on_report if what == "report" else self._on_failed)(*args)
            n += 1
        return n

    def run(self, max_jobs: int = 1000) -> None:
        """Run and deliver until the lane is idle (follow-ups included)."""
        for _ in range(max_jobs):
            ran = self.step()
            self.deliver()
            if not ran:
                return


class ExecutorLane:
    """A lane on one plain worker thread (a ``ThreadPoolExecutor``): a job that cannot be interrupted (reading a
    file) is joined at exit, not aborted. ``post(fn)`` must run ``fn`` on the listener's thread."""

    def __init__(self, name: str, post: Callable[[Callable[[], None]], None]):
        self.name = name
        self._q = _Queue()
        self._post = post
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._on_report: ReportFn = lambda *a: None
        self._on_failed: FailedFn = lambda *a: None

    def listen(self, on_report: ReportFn, on_failed: FailedFn) -> None:
        self._on_report, self._on_failed = on_report, on_failed

    def submit(self, job) -> int:
        gen = self._q.submit(job)
        self._pool.submit(self._drain)
        return gen

    def cancel(self) -> None:
        self._q.cancel()

    @property
    def generation(self) -> int:
        return self._q.gen

    def is_idle(self) -> bool:
        return self._q.idle()

    def _drain(self) -> None:
        while not self._q.quit:
            item = self._q.take()
            if item is None:
                return
            gen, job = item
            run_job(
                self._q,
                gen,
                job,
                lambda g, k, p: self._hand_over(lambda: self._on_report(g, k, p)),
                lambda g, m: self._hand_over(lambda: self._on_failed(g, m)),
            )

    def _hand_over(self, fn) -> None:
        if not self._q.quit:  # after stop() the listener may be gone (a closed window)
            self._post(fn)

    def stop(self) -> None:
        """Drop what waits; a running job finishes in the background (its reports are stale)."""
        with self._q.cond:
            self._q.quit = True
            self._q.gen += 1
            self._q.pending = None
            self._q.background.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
