"""The worklist on known inputs: ranked by score (ties by flagged volume, then id), failures apart in both files,
the folder read back in the same order, next/previous skipping failures."""

import csv
import json

import pytest

from app.errors import StudyError
from app.viewer.worklist import Worklist, rank, write_worklist


def _res(sid, score=None, flagged=None, status="ok", error=None):
    r = {
        "id": sid,
        "status": status,
        "input": {"source": f"/data/{sid}.nii.gz", "kind": "file", "files": [f"/data/{sid}.nii.gz"]},
        "settings": {"model": "m"},
    }
    if status == "ok":
        r.update(score=score, flagged_ml=flagged, peak_slice=3, n_findings=1, outputs={"mask": "mask.nii.gz"})
    else:
        r["error"] = error
    return r


KNOWN = [
    _res("low", 0.5, 1.0),
    _res("top", 9.0, 9.5),
    _res("bad", status="failed", error="bad.nii.gz: not a readable NIfTI file"),
    _res("tie-b", 2.0, 4.0),
    _res("tie-a", 2.0, 4.0),
    _res("tie-more", 2.0, 5.0),
    _res("zero", 0.0, 0.0),
]
ORDER = ["top", "tie-more", "tie-a", "tie-b", "low", "zero"]


def test_rank_known_inputs():
    ranked, failed = rank(KNOWN)
    assert [r["id"] for r in ranked] == ORDER
    assert [r["id"] for r in failed] == ["bad"]


def test_files_and_reading_back(tmp_path):
    for r in KNOWN:
        (tmp_path / r["id"]).mkdir()
        (tmp_path / r["id"] / "result.json").write_text(json.dumps(r))
    csv_path, json_path = write_worklist(tmp_path, KNOWN, {"model": "m"})
    rows = list(csv.DictReader(csv_path.open()))
    assert [row["id"] for row in rows] == [*ORDER, "bad"]
    assert [row["rank"] for row in rows] == ["1", "2", "3", "4", "5", "6", ""]
    assert rows[-1]["status"] == "failed" and "not a readable" in rows[-1]["error"]
    doc = json.loads(json_path.read_text())
    assert [e["id"] for e in doc["studies"]] == ORDER and [e["id"] for e in doc["failures"]] == ["bad"]
    assert doc["n_ok"] == 6 and doc["n_failed"] == 1 and doc["model"] == "m"
    wl = Worklist(tmp_path)
    assert [e.id for e in wl.entries] == [*ORDER, "bad"]
    assert [e.rank for e in wl.entries][-2:] == [6, None]
    assert (
        wl.entries[0].study_path() == "/data/top.nii.gz" and wl.entries[0].mask_path == tmp_path / "top" / "mask.nii.gz"
    )
    # next/previous: from the start, through the list, never onto the failure
    assert wl.step(1).id == "top" and wl.step(1).id == "tie-more"
    assert wl.step(-1).id == "top" and wl.step(-1) is None
    wl.select(5)
    assert wl.step(1) is None and wl.current == 5


def test_sort_by_a_column_and_back(tmp_path):
    """A reader orders the worklist by any column: numbers largest first, again the other way; studies without the
    value last in both directions; ties keep the ranking; the cursor stays on its study and next/previous follow
    the new order; the ranking comes back with ``rank``."""
    known = [dict(r) for r in KNOWN]
    for r, q in zip(known, (0.3, 0.1, None, 0.2, 0.2, 0.9, None), strict=True):
        if q is not None:
            r["d_q999"] = q  # "zero" has none (a result written before it was recorded)
    for r in known:
        (tmp_path / r["id"]).mkdir()
        (tmp_path / r["id"] / "result.json").write_text(json.dumps(r))
    write_worklist(tmp_path, known)
    wl = Worklist(tmp_path)
    wl.select(1)  # tie-more
    wl.sort_by("d_q999")
    assert [e.id for e in wl.entries] == ["tie-more", "low", "tie-a", "tie-b", "top", "zero", "bad"]
    assert (wl.sort_key, wl.descending) == ("d_q999", True) and wl.entries[wl.current].id == "tie-more"
    assert wl.step(1).id == "low"  # next follows the new order
    wl.sort_by("d_q999")  # the same column again: smallest first, the ones without still last
    assert [e.id for e in wl.entries] == ["top", "tie-a", "tie-b", "low", "tie-more", "zero", "bad"]
    assert not wl.descending and wl.entries[wl.current].id == "low"
    wl.sort_by("study")  # names: in order first
    assert [e.id for e in wl.entries] == sorted(ORDER) + ["bad"]
    wl.sort_by("flagged_ml", descending=False)
    assert [e.id for e in wl.entries][:3] == ["zero", "low", "tie-a"]  # tie-a before tie-b: the ranking's order
    wl.sort_by("status")  # the one column that brings the failures up
    assert [e.id for e in wl.entries] == ["bad", *ORDER]
    wl.sort_by("rank")
    assert [e.id for e in wl.entries] == [*ORDER, "bad"]
    with pytest.raises(ValueError, match="sort key"):
        wl.sort_by("colour")


def test_folder_without_worklist_and_empty_folder(tmp_path):
    for r in KNOWN[:2]:
        (tmp_path / r["id"]).mkdir()
        (tmp_path / r["id"] / "result.json").write_text(json.dumps(r))
    wl = Worklist(tmp_path)
    assert [e.id for e in wl.entries] == ["top", "low"]
    assert wl.triage["status"] == "none" and "records nothing" in wl.triage["text"]  # no claim it cannot back
    ev = {"status": "not-validated", "text": "Triage not validated: AUROC 0.53"}
    write_worklist(tmp_path, KNOWN[:2], {"triage_evidence": ev})
    assert Worklist(tmp_path).triage == ev
    with pytest.raises(StudyError, match="no batch results"):
        Worklist(tmp_path / "top")


def _folder(path, results):
    for r in results:
        (path / r["id"]).mkdir(parents=True)
        (path / r["id"] / "result.json").write_text(json.dumps(r))
    write_worklist(path, results)
    return path


def _session():
    from app.viewer.controller import ViewerController
    from app.viewer.jobs import ManualLane
    from app.viewer.worklist_session import WorklistSession

    lane = ManualLane("worklist")
    ctl = ViewerController(device="cpu", precompute_eps_grid=False)
    errors, read, reading = [], [], []
    ctl.events.error.connect(errors.append)
    session = WorklistSession(ctl, lane)
    session.on_worklist.append(read.append)
    session.on_reading.append(reading.append)
    return session, lane, errors, read, reading


def test_a_worklist_is_read_on_its_lane_and_only_the_newest_read_is_shown(tmp_path):
    """Opening a folder reads nothing on the caller's thread: the lane reads it and reports back. A second open
    before the first read ran replaces it (the first never shows), and a read told to stop stops between results."""
    from app.errors import Cancelled

    a = _folder(tmp_path / "a", KNOWN[:2])
    b = _folder(tmp_path / "b", KNOWN[3:6])
    session, lane, errors, read, reading = _session()
    session.open_folder(a)
    assert session.worklist is None and session.reading == str(a) and reading == [(str(a), 0, 0)]
    session.open_folder(b)
    lane.run()
    assert [[e.id for e in wl.entries] for wl in read] == [["tie-more", "tie-a", "tie-b"]]  # a's read dropped
    assert session.worklist is read[0] and session.reading is None and reading[-1] is None and errors == []
    with pytest.raises(Cancelled):  # between two chunks of results
        Worklist(a, should_stop=lambda: True)
    told = []
    Worklist(a, progress=lambda i, n: told.append((i, n)))
    assert told == [(0, 2)]


def test_a_folder_that_cannot_be_read_says_why_and_keeps_the_list_shown(tmp_path):
    a = _folder(tmp_path / "a", KNOWN[:2])
    session, lane, errors, read, _ = _session()
    session.open_folder(a)
    lane.run()
    session.open_folder(tmp_path / "a" / "top")  # a study's folder, not a batch's
    lane.run()
    assert len(read) == 1 and session.worklist is read[0] and session.reading is None
    assert errors and errors[-1][0] == "Cannot open worklist" and "no batch results" in errors[-1][1]


def test_reload_keeps_the_order_and_the_study_and_adds_the_studies_done_since(tmp_path):
    """A batch still running: reloading lists the study it finished since, in the order the reader chose, with the
    cursor on the same study (next/previous go on from there)."""
    import os

    folder = _folder(tmp_path / "run", KNOWN[:2] + KNOWN[3:5])
    session, lane, errors, read, _ = _session()
    assert session.reload() is None  # nothing open yet
    session.open_folder(folder)
    lane.run()
    wl = session.worklist
    wl.sort_by("study")
    wl.select([e.id for e in wl.entries].index("tie-b"))
    late = _res("late", 5.0, 1.0)
    (folder / "late").mkdir()
    (folder / "late" / "result.json").write_text(json.dumps(late))
    t = (folder / "worklist.json").stat().st_mtime
    os.utime(folder / "late" / "result.json", (t + 5, t + 5))  # finished after the worklist was written
    session.reload()
    lane.run()
    new = session.worklist
    assert new is not wl and [e.id for e in new.entries] == ["late", "low", "tie-a", "tie-b", "top"]
    assert (new.sort_key, new.descending) == ("study", False) and new.entries[new.current].id == "tie-b"
    assert new.step(1).id == "top" and errors == []


@pytest.mark.parametrize(
    "rewrite_s, expected",
    [
        (None, 60.0),
        (0.0, 10.0),
        (-5, 60.0),
        (True, 60.0),
        ("30", 60.0),
        (2.5, 10.0),
        (10, 10.0),
        (30, 30.0),
        (600.0, 600.0),
    ],
)
def test_refresh_interval_follows_the_batch_with_a_floor(rewrite_s, expected):
    from app.viewer.worklist import refresh_interval

    assert refresh_interval(rewrite_s) == expected


def test_a_running_batch_is_followed_as_often_as_it_writes_its_lists(tmp_path):
    """The worklist of a batch still running records how often the batch writes it again (``rewrite_s``, what
    report.html's reload follows too); the viewer reads the folder that often, and says so."""
    results = KNOWN[:2]
    for every, expected in ((30.0, 30.0), (3.0, 10.0), (None, 60.0)):
        folder = tmp_path / f"every-{every}"
        _folder(folder, results)
        write_worklist(folder, results, {"n_pending": 5, "rewrite_s": every})
        wl = Worklist(folder)
        assert wl.refresh_s == expected
        assert f"again every {expected:g} s" in wl.unfinished
    write_worklist(folder, results, {"n_pending": 0, "rewrite_s": 0.0})  # the batch finished
    assert Worklist(folder).unfinished is None


def test_refresh_reloads_only_an_unfinished_worklist_and_quietly(tmp_path):
    """The viewer's timer calls ``refresh``: it reads the folder again only while the batch has not finished and no
    read is under way; a folder that can no longer be read then goes to the status bar, not to a dialog."""
    import shutil

    session, lane, errors, read, _ = _session()
    status = []
    session.ctl.events.status.connect(status.append)
    assert session.refresh() is None  # nothing open
    done = _folder(tmp_path / "done", KNOWN[:2])
    session.open_folder(done)
    lane.run()
    assert session.worklist.unfinished is None and session.refresh() is None  # a finished batch: nothing to do
    running = _folder(tmp_path / "running", KNOWN[:2])
    (running / "worklist.json").unlink()  # no worklist yet: the batch is still at its first studies
    session.open_folder(running)
    lane.run()
    assert session.worklist.unfinished and "every 60 s" in session.worklist.unfinished
    assert session.refresh() is not None and session.refresh() is None  # one read at a time
    lane.run()
    assert len(read) == 3 and errors == []
    shutil.rmtree(running)  # the folder went away (a share unmounted)
    session.refresh()
    lane.run()
    assert errors == [] and status[-1].startswith("Cannot read the worklist again: ")
    assert session.worklist is read[-1]  # the list shown stays
