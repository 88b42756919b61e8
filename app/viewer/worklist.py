"""The triage worklist of a batch output folder (``python main.py batch ... --out DIR``), Qt-free.

``DIR/<study-id>/result.json`` holds each study's outcome; :func:`rank` orders them (highest study-level score
first; ties by more flagged volume, then by id, so the order is total and reproducible) and lists failures
apart. :func:`write_worklist` writes ``worklist.csv`` and ``worklist.json``; :class:`Worklist` reads a folder
back for the viewer (the table, next/previous study, the saved mask of each).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.atomic import atomic_write_text
from app.errors import Cancelled, StudyError

WORKLIST_JSON = "worklist.json"
WORKLIST_CSV = "worklist.csv"
RESULT = "result.json"
BATCH_JSON = "batch.json"


def is_batch_output(folder: str | os.PathLike) -> bool:
    """True for a batch output folder (``batch``'s --out): it holds the worklist.json or batch.json a batch writes,
    or -- a batch still running, before it wrote either -- a study folder with a batch's result.json (each known by
    a key only this program writes there, so another tool's files of those names do not count). The viewer opens
    such a folder as a worklist, and ``batch`` does not take its masks for studies."""
    f = Path(folder)
    if not f.is_dir():
        return False
    if any(_json_has(f / name, "n_pending") for name in (WORKLIST_JSON, BATCH_JSON)):
        return True
    return any(is_batch_result(p) for p in f.glob(f"*/{RESULT}"))


def is_batch_result(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a study's result.json as ``batch`` writes it."""
    return _json_has(Path(path), "input_fingerprint")


def _json_has(path: Path, key: str) -> bool:
    """Whether ``path`` is a JSON object with ``key`` (False for a missing, unreadable or other file)."""
    if not path.is_file():
        return False
    r = read_result(path)
    return r is not None and key in r


CSV_COLUMNS = [
    "rank",
    "id",
    "status",
    "score",
    "peak_slice",
    "n_findings",
    "largest_ml",
    "flagged_ml",
    "d_q999",
    "model",
    "eps",
    "tau",
    "total_s",
    "source",
    "error",
]


def _num(v, default=float("nan")) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f


def sort_key(r: dict):
    score = _num(r.get("score"), -math.inf)
    flagged = _num(r.get("flagged_ml"), -math.inf)
    score = -math.inf if math.isnan(score) else score
    flagged = -math.inf if math.isnan(flagged) else flagged
    return (-score, -flagged, str(r.get("id", "")))


def rank(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """(ranked successful results, failures sorted by id)."""
    ok = [r for r in results if r.get("status") == "ok"]
    bad = [r for r in results if r.get("status") != "ok"]
    return sorted(ok, key=sort_key), sorted(bad, key=lambda r: str(r.get("id", "")))


def _row(r: dict, rank_no: int | None) -> dict:
    st = r.get("settings") or {}
    src = (r.get("input") or {}).get("source", "")
    return {
        "rank": "" if rank_no is None else rank_no,
        "id": r.get("id", ""),
        "status": r.get("status", "failed"),
        "score": "" if r.get("score") is None else f"{float(r['score']):.4f}",
        "peak_slice": r.get("peak_slice", ""),
        "n_findings": r.get("n_findings", ""),
        "largest_ml": "" if r.get("largest_ml") is None else f"{float(r['largest_ml']):.4f}",
        "flagged_ml": "" if r.get("flagged_ml") is None else f"{float(r['flagged_ml']):.4f}",
        "d_q999": "" if r.get("d_q999") is None else f"{float(r['d_q999']):.4f}",
        "model": st.get("model", ""),
        "eps": r.get("eps", ""),
        "tau": r.get("tau", ""),
        "total_s": (r.get("timings") or {}).get("total_s", ""),
        "source": src,
        "error": r.get("error", ""),
    }


def write_worklist(out_dir: str | os.PathLike, results: list[dict], meta: dict | None = None) -> tuple[Path, Path]:
    """``worklist.csv`` (ranked rows, then the failures with rank empty) and ``worklist.json``
    (``{"studies": [...ranked], "failures": [...], ...meta}``), both atomically."""
    out = Path(out_dir)
    ranked, failed = rank(results)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for i, r in enumerate(ranked, 1):
        w.writerow(_row(r, i))
    for r in failed:
        w.writerow(_row(r, None))
    csv_path, json_path = out / WORKLIST_CSV, out / WORKLIST_JSON
    atomic_write_text(csv_path, buf.getvalue())

    def entry(r: dict, i: int | None) -> dict:
        e = {k: v for k, v in _row(r, i).items() if v != ""}
        e["folder"] = r.get("id", "")
        for k in ("score", "largest_ml", "flagged_ml", "d_q999"):
            if r.get(k) is not None:
                e[k] = r[k]
        return e

    doc = {
        **(meta or {}),
        "score_definition": next((r.get("score_definition") for r in ranked if r.get("score_definition")), ""),
        "n_ok": len(ranked),
        "n_failed": len(failed),
        "studies": [entry(r, i) for i, r in enumerate(ranked, 1)],
        "failures": [entry(r, None) for r in failed],
    }
    atomic_write_text(json_path, json.dumps(doc, indent=1) + "\n")
    return csv_path, json_path


def read_result(path: str | os.PathLike) -> dict | None:
    """A study's result.json, or None when missing or unreadable (an interrupted write never leaves half a file,
    but a user may have edited one)."""
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return r if isinstance(r, dict) else None


#: what the worklist can be ordered by (:meth:`Worklist.sort_by`): each entry's value, None where it has none
SORT_KEYS = {
    "rank": lambda e: e.rank,
    "study": lambda e: e.id,
    "score": lambda e: e.score,
    "d_q999": lambda e: e.d_q999,
    "findings": lambda e: e.n_findings,
    "flagged_ml": lambda e: e.flagged_ml,
    "peak_slice": lambda e: e.peak_slice,
    "status": lambda e: e.status_text,
}
#: keys whose first click sorts ascending (the rest: largest first)
ASCENDING_FIRST = frozenset({"rank", "study", "peak_slice", "status"})


@dataclass
class WorklistEntry:
    id: str
    rank: int | None  # None for failures
    status: str
    score: float | None
    peak_slice: int | None
    n_findings: int | None
    flagged_ml: float | None
    source: str
    folder: Path
    error: str = ""
    result: dict = field(default_factory=dict, repr=False)
    d_q999: float | None = None  # the 99.9th percentile of D over the foreground (the score of version 3)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def status_text(self) -> str:
        """What the worklist shows in its status column (and sorts by)."""
        return self.status if self.ok else f"failed: {self.error}"

    @property
    def mask_path(self) -> Path | None:
        name = (self.result.get("outputs") or {}).get("mask")
        return self.folder / name if name else None

    @property
    def difference_path(self) -> Path | None:
        name = (self.result.get("outputs") or {}).get("difference")
        return self.folder / name if name else None

    def study_path(self) -> str:
        """What to open: the NIfTI file, or the folder of a DICOM series."""
        inp = self.result.get("input") or {}
        files = inp.get("files") or []
        return files[0] if inp.get("kind") == "file" and files else inp.get("source", self.source)


#: what the worklist dock says when a batch folder records no triage measurement (written before batches did)
NO_TRIAGE_RECORD = {
    "status": "none",
    "text": "This worklist records nothing of how well its order triages: read every study, whatever its rank.",
}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("-inf")


#: how often (s) the viewer reads an open worklist again while its batch has not finished, where the folder does not
#: say how often its batch writes it (no worklist.json yet, or one without ``rewrite_s``): the batch's default
#: (app.batch.runner.INTERIM_S)
REFRESH_S = 60.0

#: the shortest interval (s) at which the viewer, or the report page in a browser, follows a batch still running,
#: however often the batch says it writes its lists
MIN_REFRESH_S = 10.0


def refresh_interval(rewrite_s) -> float:
    """How often (s) to read a running batch's folder again, given the ``rewrite_s`` its worklist.json records (how
    often the batch writes its lists while studies are pending; 0: after every study): that, but at least
    :data:`MIN_REFRESH_S`; :data:`REFRESH_S` where it records none (a batch that writes its lists only at the end
    still finishes studies, and the viewer shows those). The report page reloads itself as often."""
    if isinstance(rewrite_s, int | float) and not isinstance(rewrite_s, bool) and rewrite_s >= 0:
        return max(MIN_REFRESH_S, float(rewrite_s))
    return REFRESH_S


#: how many results :class:`Worklist` reads between two looks at ``should_stop`` and ``progress``
READ_CHUNK = 100


class Worklist:
    """A batch output folder read back: ranked entries (failures after them), and a cursor for next/previous.

    Reading costs one ``result.json`` per study (0.3 s for 2,000 here), so the viewer reads on a worker thread:
    ``should_stop()`` is asked every :data:`READ_CHUNK` results (True: :class:`app.errors.Cancelled`), and
    ``progress(done, total)`` is told as often."""

    def __init__(
        self,
        folder: str | os.PathLike,
        should_stop: Callable[[], bool] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise StudyError(f"{self.folder}: not a folder")
        results = []
        wl = self.folder / WORKLIST_JSON
        ids: list[str] | None = None
        pending = 0
        rewrite_s = None
        #: how well the order triages, as the batch run recorded it (app.core.triage_evidence)
        self.triage: dict = dict(NO_TRIAGE_RECORD)
        if wl.is_file():
            try:
                doc = json.loads(wl.read_text())
                ids = [e["folder"] for e in doc.get("studies", []) + doc.get("failures", [])]
                ev = doc.get("triage_evidence")
                if isinstance(ev, dict) and ev.get("text"):
                    self.triage = ev
                pending = int(doc.get("n_pending") or 0)
                rewrite_s = doc.get("rewrite_s")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                ids = None
        on_disk = sorted(p.parent.name for p in self.folder.glob(f"*/{RESULT}"))
        listed = ids
        if ids is None:  # no (readable) worklist: every study folder with a result
            ids = on_disk
        else:  # and the studies finished since the worklist was written (a batch still running writes it now and then;
            # a result older than the worklist and not in it is another run's, with other inputs)
            known, written = set(ids), _mtime(wl)
            ids = ids + [sid for sid in on_disk if sid not in known and _mtime(self.folder / sid / RESULT) > written]
        later = len(ids) - len(listed) if listed is not None else 0
        #: how often (s) the viewer reads the folder again while :attr:`unfinished` (:func:`refresh_interval`)
        self.refresh_s = refresh_interval(rewrite_s)
        #: None for a batch that finished; else what a reader should know: the order may still change
        self.unfinished: str | None = None
        if listed is None:
            what = f"No {WORKLIST_JSON} yet" if not wl.is_file() else f"{WORKLIST_JSON} cannot be read"
            self.unfinished = (
                f"{what}: the batch is still running, or stopped before writing it. Shown: the {len(ids)} studies "
                f"done so far. The viewer reads the folder again every {self.refresh_s:g} s (Reload: now)."
            )
        elif pending or later:
            parts = [f"{pending} studies were still to do when the batch wrote this worklist"] if pending else []
            if later:
                parts.append(f"{later} finished since are included")
            self.unfinished = (
                "The batch has not finished, or was stopped: " + "; ".join(parts) + ". The viewer reads the "
                f"folder again every {self.refresh_s:g} s (Reload: now); a rerun of the batch finishes the rest."
            )
        for i, sid in enumerate(ids):
            if i % READ_CHUNK == 0:
                if should_stop is not None and should_stop():
                    raise Cancelled()
                if progress is not None:
                    progress(i, len(ids))
            r = read_result(self.folder / sid / RESULT)
            if r is not None:
                results.append(r)
        if not results:
            raise StudyError(f"{self.folder}: no batch results here (expected {WORKLIST_JSON} and <study>/{RESULT})")
        ranked, failed = rank(results)
        self.entries: list[WorklistEntry] = []
        for i, r in enumerate(ranked + failed):
            self.entries.append(
                WorklistEntry(
                    id=str(r.get("id")),
                    rank=i + 1 if i < len(ranked) else None,
                    status=str(r.get("status", "failed")),
                    score=None if r.get("score") is None else float(r["score"]),
                    peak_slice=None if r.get("peak_slice") is None else int(r["peak_slice"]),
                    n_findings=None if r.get("n_findings") is None else int(r["n_findings"]),
                    flagged_ml=None if r.get("flagged_ml") is None else float(r["flagged_ml"]),
                    source=str((r.get("input") or {}).get("source", "")),
                    folder=self.folder / str(r.get("id")),
                    error=str(r.get("error", "")),
                    result=r,
                    d_q999=None if r.get("d_q999") is None else float(r["d_q999"]),
                )
            )
        self.current: int | None = None
        self.sort_key, self.descending = "rank", False

    def __len__(self) -> int:
        return len(self.entries)

    def select(self, i: int) -> WorklistEntry:
        if not 0 <= i < len(self.entries):
            raise IndexError(i)
        self.current = i
        return self.entries[i]

    def sort_by(self, key: str, descending: bool | None = None) -> None:
        """Order the entries by one of :data:`SORT_KEYS` (the worklist's own ranking is ``rank``), as a reader
        clicks a column header: numbers largest first and names in order unless ``descending`` says otherwise; the
        same key again reverses the order. Studies without the value (failures, except by ``status``; results
        written before the value was recorded) stay last in either direction; ties keep the worklist's ranking.
        Next/previous follow the new order, from the same study."""
        if key not in SORT_KEYS:
            raise ValueError(f"sort key must be one of {tuple(SORT_KEYS)}, not {key!r}")
        if descending is None:
            descending = (not self.descending) if key == self.sort_key else key not in ASCENDING_FIRST
        value = SORT_KEYS[key]

        def get(e: WorklistEntry):  # a failure has a status and nothing else to order by
            return value(e) if e.ok or key == "status" else None

        cur = self.entries[self.current] if self.current is not None else None
        by_rank = sorted(self.entries, key=lambda e: (e.rank is None, e.rank or 0))
        have = [e for e in by_rank if get(e) is not None]
        have.sort(key=get, reverse=descending)  # stable: ties keep the ranking
        self.entries = have + [e for e in by_rank if get(e) is None]
        self.sort_key, self.descending = key, descending
        self.current = None if cur is None else self.entries.index(cur)

    def step(self, delta: int) -> WorklistEntry | None:
        """The next (+1) / previous (-1) study that can be opened (failures are skipped); None at either end."""
        i = -1 if self.current is None and delta > 0 else (len(self.entries) if self.current is None else self.current)
        j = i + delta
        while 0 <= j < len(self.entries):
            if self.entries[j].ok:
                return self.select(j)
            j += delta
        return None
