"""``batch --server ... --query ...`` against the real Orthanc: the series a query finds are retrieved into the
cache and batched, each study's DICOM SEG is sent back with --send and found on the server (reading back equal to
the batch's NIfTI mask), a rerun neither recomputes nor resends; a bad server or query ends with exit 2, one line
on stderr and nothing written."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from orthanc import PASSWORD, USER, free_port
from pacs_helpers import demo_volume, reversed_slices, run_cli

from app.data.head_ct import write_dicom_series
from app.io import load_mask, load_study
from app.io.seg import read_seg
from app.pacs import connect, parse_server
from app.pacs.base import retrieve_study
from app.pacs.cache import RetrievalCache

DATES = {"dicomweb": "20261201", "dimse": "20261203"}


def _upload_two(orthanc, folder, date, patient_id):
    """Two studies of one series each on ``date`` (one reversed), and one decoy study on the next day."""
    vol, aff = demo_volume()
    uids = []
    for i, (v, a) in enumerate([(vol, aff), reversed_slices(vol, aff)]):
        paths = write_dicom_series(
            v, a, folder / f"s{i}", description=f"batch {i}", modality="MR", patient=(f"MG^Batch{i}", patient_id),
            extra={"StudyDate": date, "SeriesNumber": 3 + i},
        )  # fmt: skip
        orthanc.server.upload(paths)
        ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
        uids.append((str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)))
    decoy = write_dicom_series(vol, aff, folder / "decoy", modality="MR", patient=("MG^Decoy", "mg-decoy"),
                               extra={"StudyDate": str(int(date) + 1)})  # fmt: skip
    orthanc.server.upload(decoy)
    return uids


@pytest.mark.parametrize("proto", ["dicomweb", "dimse"])
def test_batch_a_query_and_send_the_segs(orthanc, env, capsys, tmp_path, tiny_model_dir, proto):
    date = DATES[proto]
    uploaded = _upload_two(orthanc, tmp_path / "upload", date, f"mg-batch-{proto}")
    srv = ["--server", orthanc.url, "--user", USER] if proto == "dicomweb" else ["--server", orthanc.dimse]
    out = tmp_path / "out"
    argv = [
        "batch", *srv, "--query", f"StudyDate={date}", "--query", "Modality=MR", "--out", out,
        "--model", tiny_model_dir / "tiny", "--max-steps", "10", "--local-threads", "--workers", "1",
        "--no-dashboard", "--no-progress", "--send",
    ]  # fmt: skip
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "2 studies, 2 image series" in err and "sent 2 DICOM SEG(s)" in stdout
    wl = json.loads((out / "worklist.json").read_text())
    assert len(wl["studies"]) == 2 and not wl["failures"]
    results = [json.loads((out / e["id"] / "result.json").read_text()) for e in wl["studies"]]
    assert {(r["input"]["study_uid"], r["input"]["series_uid"]) for r in results} == set(uploaded)
    assert {r["id"] for r in results} == {f"mg-batch-{proto}_{date}_s3", f"mg-batch-{proto}_{date}_s4"}
    cache = RetrievalCache(env / "cache")
    assert {(e.study_uid, e.series_uid) for e in cache.entries()} == set(uploaded)  # complete series, in the cache

    # each SEG is on the server now, and reads back onto its source series equal to the batch's NIfTI mask
    cfg = parse_server(orthanc.url, username=USER, password=PASSWORD) if proto == "dicomweb" else parse_server(
        orthanc.dimse)  # fmt: skip
    flagged = 0
    with connect(cfg) as c:
        for r in results:
            study_uid = r["input"]["study_uid"]
            mine = pydicom.dcmread(out / r["id"] / "mask.seg.dcm", stop_before_pixels=True).SeriesInstanceUID
            segs = [s for s in c.find_series(study_uid) if s.modality == "SEG"]
            assert [s.series_uid for s in segs] == [mine]
            study_dir = retrieve_study(c, RetrievalCache(tmp_path / "check-cache"), study_uid)
            source = load_study(study_dir / r["input"]["series_uid"])
            (back,) = list((study_dir / mine).glob("*.dcm"))
            mask = load_mask(out / r["id"] / "mask.nii.gz", source)
            np.testing.assert_array_equal(read_seg(back, source), mask)
            flagged += int(mask.sum())
    assert flagged > 0

    # a rerun: nothing recomputed (the SEG series on the server is not an image series), nothing sent twice
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "0 analysed, 2 skipped" in stdout and "no new DICOM SEGs" in err
    with connect(cfg) as c:
        assert all(len([s for s in c.find_series(st) if s.modality == "SEG"]) == 1 for st, _ in uploaded)


def test_batch_pacs_bad_server_or_query_writes_nothing(orthanc, env, capsys, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    common = ["--out", out, "--model", tiny_model_dir / "tiny", "--local-threads", "--no-dashboard"]
    cases = [
        (["--server", f"ORTHANC@127.0.0.1:{free_port()}", "--query", "StudyDate=20261201"], "connection refused"),
        (["--server", orthanc.url, "--user", USER, "--query", "Colour=blue"], "--query Colour: unknown key"),
        (["--server", orthanc.url, "--user", USER, "--query", "StudyDate=2026-13"], "use YYYYMMDD"),
        (["--server", orthanc.url, "--user", USER, "--query", "StudyDate"], "give KEY=VALUE"),
        (["--server", orthanc.dimse, "--query", "StudyDate=19000101"], "matches no studies"),
        (["--server", orthanc.dimse], "needs at least one --query"),
        (["--query", "StudyDate=20261201"], "need --server"),
        (["--server", orthanc.dimse, "--query", "PatientID=mg-empty"], "hold no image series"),
        ([tmp_path, "--server", orthanc.dimse, "--query", "StudyDate=20261201"], "not both"),
    ]
    for extra, message in cases:
        code, stdout, err = run_cli(capsys, "batch", *extra, *common)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], (extra, err)
        assert not out.exists(), extra  # nothing half-written
    assert not list((env / "cache").rglob("*.dcm"))  # nothing retrieved either


def test_a_series_that_cannot_be_retrieved_fails_alone(orthanc, env, capsys, tmp_path, tiny_model_dir, monkeypatch):
    """Three series retrieved two at a time; one is deleted from the real server between the query and its
    retrieval: that study is a failed entry of the worklist with the server's answer, the others are analysed, exit
    1; once the series is back on the server a rerun analyses it and skips the others. A later outage of a series
    whose result is already complete keeps that result."""
    from app.cli import batch_pacs

    date = "20261205"
    uploaded = _upload_two(orthanc, tmp_path / "upload", date, "mg-batch-fail")
    vol, aff = demo_volume()
    tags = {"StudyDate": date, "SeriesNumber": 9}
    third = write_dicom_series(vol, aff, tmp_path / "upload" / "s2", modality="MR",
                               patient=("MG^Batch2", "mg-batch-fail"), extra=tags)  # fmt: skip
    orthanc.server.upload(third)
    ds = pydicom.dcmread(third[0], stop_before_pixels=True)
    victim = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
    real_retrieve = batch_pacs.retrieve
    seen = []

    def delete_victim(st, s):
        seen.append(s.series_uid)
        if (st.study_uid, s.series_uid) == victim:
            orthanc.server.delete_series(*victim)

    monkeypatch.setattr(batch_pacs, "retrieve", lambda args, log=None: real_retrieve(args, log, delete_victim))
    out = tmp_path / "out"
    argv = [
        "batch", "--server", orthanc.dimse, "--query", f"StudyDate={date}", "--query", "Modality=MR",
        "--retrieve-workers", "2", "--out", out, "--model", tiny_model_dir / "tiny", "--max-steps", "10",
        "--local-threads", "--workers", "1", "--no-dashboard", "--no-progress",
    ]  # fmt: skip
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 1, err
    assert sorted(seen) == sorted([u[1] for u in uploaded] + [victim[1]])
    assert "3 studies, 3 image series" in err and "(retrieving 2 at a time)" in err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: series")]
    assert len(warnings) == 1 and victim[1] in warnings[0] and "recorded as failed" in warnings[0]
    assert "retrieved 2 series" in err and "1 failed" in err
    assert "2 analysed, 0 skipped (already done), 1 failed" in stdout
    wl = json.loads((out / "worklist.json").read_text())
    assert {e["id"] for e in wl["studies"]} == {f"mg-batch-fail_{date}_s3", f"mg-batch-fail_{date}_s4"}
    (failure,) = wl["failures"]
    assert failure["id"] == f"mg-batch-fail_{date}_s9" and failure["error"].startswith("retrieval failed: ")
    rec = json.loads((out / failure["id"] / "result.json").read_text())
    assert rec["status"] == "failed" and rec["input"]["series_uid"] == victim[1]

    # the series is back: the rerun analyses it, and only it
    orthanc.server.upload(third)
    seen.clear()
    victim = ("none", "none")
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "1 analysed, 2 skipped (already done), 0 failed" in stdout
    wl = json.loads((out / "worklist.json").read_text())
    assert len(wl["studies"]) == 3 and not wl["failures"]

    # an outage of a series already analysed (cache cleared, series gone again) keeps its complete result; the
    # other two arrive as new files (new modification times), so they are analysed again
    RetrievalCache(env / "cache").clear()
    victim = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "1 of them not retrieved this time: their earlier results are kept" in err
    assert "2 analysed, 1 skipped (already done), 0 failed" in stdout
    assert len(json.loads((out / "worklist.json").read_text())["studies"]) == 3
