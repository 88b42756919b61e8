"""``python main.py pacs ...`` and ``detect --server ... --send`` against the real Orthanc: the SEG detect sends
is found on the server and reads back equal to the mask detect computed; passwords never reach the output."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from orthanc import PASSWORD, USER
from pacs_helpers import run_cli

from app.io import load_mask, load_study
from app.io.seg import read_seg
from app.pacs import connect, parse_server
from app.pacs.base import retrieve_series
from app.pacs.cache import RetrievalCache


@pytest.mark.parametrize("proto", ["dicomweb", "dimse"])
def test_echo_find_get_send(orthanc, env, capsys, proto, tmp_path):
    srv = ["--server", orthanc.url, "--user", USER] if proto == "dicomweb" else ["--server", orthanc.dimse]
    code, out, err = run_cli(capsys, "pacs", "echo", *srv)
    assert code == 0 and "answers" in out, err
    code, out, _ = run_cli(capsys, "pacs", "find", *srv, "--patient-id", "mg-demo", "--date-from", "2024-01-01")
    assert code == 0 and "mg-demo" in out and "Brain MRI demo" in out and "1 study" in out
    code, out, _ = run_cli(capsys, "pacs", "find", *srv, "--study-uid", orthanc.studies["two-a"])
    assert code == 0 and out.count("MR ") >= 2 and "SR" in out
    code, out, err = run_cli(capsys, "pacs", "get", *srv, "--study-uid", orthanc.studies["demo"])
    assert code == 0, err
    folder = out.strip().splitlines()[-1]
    assert load_study(folder).shape == load_study(orthanc.files["demo"][0].parent).shape
    code, out, err = run_cli(capsys, "pacs", "get", *srv, "--study-uid", orthanc.studies["two-a"])
    assert code == 2 and "pick one with --series-uid" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli(capsys, "pacs", "cache", "list")
    assert orthanc.studies["demo"] in out
    code, out, _ = run_cli(capsys, "pacs", "cache", "clear")
    assert code == 0 and "cleared" in out and not list((tmp_path / "cache").rglob("*.dcm"))


def test_saved_server_and_bad_cases(orthanc, env, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    code, out, _ = run_cli(capsys, "pacs", "servers", "add", "nopw", "--server", orthanc.url, "--user", USER)
    assert code == 0
    ini = next((env / "settings").rglob("viewer.ini"))
    assert PASSWORD not in ini.read_text()  # not saved unless asked
    code, out, _ = run_cli(capsys, "pacs", "servers", "add", "local", "--server", orthanc.url, "--user", USER,
                        "--remember-password")
    assert code == 0 and "local" in out
    code, out, _ = run_cli(capsys, "pacs", "servers", "list")
    assert "local" in out and "yes" in out  # password saved, never shown
    code, out, err = run_cli(capsys, "pacs", "echo", "--server", "local")
    assert code == 0, err
    code, _, err = run_cli(capsys, "pacs", "echo", "--server", "nosuch")
    assert code == 2 and "unknown server 'nosuch'" in err and "local" in err
    code, _, err = run_cli(capsys, "pacs", "find", "--server", orthanc.url.replace("://", f"://{USER}:wrong-pw-77@"))
    assert code == 2 and "401 Unauthorized" in err and "wrong-pw-77" not in err
    code, _, err = run_cli(capsys, "pacs", "send", "--server", "local", str(env / "nothing-here"))
    assert code == 2 and "no such file" in err
    assert PASSWORD not in caplog.text and "wrong-pw-77" not in caplog.text


@pytest.mark.parametrize("proto", ["dicomweb", "dimse"])
def test_detect_and_send_then_find_the_seg(orthanc, env, capsys, tmp_path, tiny_model_dir, proto):
    srv = ["--server", orthanc.url, "--user", USER] if proto == "dicomweb" else ["--server", orthanc.dimse]
    study_uid = orthanc.studies["send"]
    nii, seg = tmp_path / "mask.nii.gz", tmp_path / "seg.dcm"
    code, out, err = run_cli(
        capsys, "detect", *srv, "--study-uid", study_uid, "--send", "--out", nii, "--seg", seg,
        "--model", tiny_model_dir / "tiny", "--max-steps", "10",
    )
    assert code == 0, err
    assert "sent the DICOM SEG" in out
    # find the SEG on the server, fetch it, read it back onto the source series: equal to detect's mask
    cfg = parse_server(orthanc.url, username=USER, password=PASSWORD) if proto == "dicomweb" else parse_server(
        orthanc.dimse)
    cache = RetrievalCache(tmp_path / "check-cache")
    with connect(cfg) as c:
        segs = [s for s in c.find_series(study_uid) if s.modality == "SEG"]
        assert segs and all(s.n_instances == 1 for s in segs)
        source_info, source = retrieve_series(c, cache, study_uid)  # the SEG series is not an image series
        assert source_info.modality == "MR"
        import pydicom

        mine = pydicom.dcmread(seg, stop_before_pixels=True).SeriesInstanceUID
        assert mine in {s.series_uid for s in segs}
        from app.pacs.base import retrieve_study

        study_dir = retrieve_study(c, cache, study_uid)
    study = load_study(source)
    mask = load_mask(nii, study)
    assert mask.any()
    (back,) = list((study_dir / mine).glob("*.dcm"))
    np.testing.assert_array_equal(read_seg(back, study), mask)


def test_detect_send_rejected_and_option_errors(orthanc, env, capsys, tmp_path, tiny_model_dir):
    code, out, err = run_cli(
        capsys, "detect", "--server", orthanc.dimse, "--study-uid", orthanc.studies["reject"], "--send",
        "--model", tiny_model_dir / "tiny", "--max-steps", "5",
    )
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "rejected seg.dcm" in errors[0]
    code, _, err = run_cli(capsys, "detect", "--server", orthanc.dimse, "--out", tmp_path / "x.dcm")
    assert code == 2 and "--study-uid" in err
    code, _, err = run_cli(capsys, "detect", "--server", orthanc.dimse, "--study-uid", orthanc.studies["empty"],
                        "--send", "--model", tiny_model_dir / "tiny")
    assert code == 2 and "no image series" in err
