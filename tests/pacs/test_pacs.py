"""The PACS clients against a real Orthanc, over DICOMweb and DIMSE: echo, find, get (into the cache, atomic),
send, and the bad cases: server down, wrong AE title, timeout mid-transfer, 401/403/404, no images, several
series, a non-image series, a rejected store, a huge series with progress and cancel."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from orthanc import PASSWORD, READONLY_PASSWORD, READONLY_USER, USER, free_port
from pacs_helpers import BIG
from proxy import StallingProxy

from app.errors import Cancelled
from app.io import load_study
from app.pacs import PacsError, Query, connect, parse_server
from app.pacs.base import dicom_files, retrieve_series, retrieve_study, send_files


def _files(cache) -> list[Path]:
    return [p for p in cache.root.rglob("*") if p.is_file()] if cache.root.exists() else []


def test_echo(server):
    with connect(server) as c:
        assert "answers" in c.echo()


def test_find_studies_by_each_key(server, orthanc):
    with connect(server) as c:
        by_name = c.find_studies(Query(patient_name="MG*Demo"))  # (Orthanc 1.10 QIDO does not match a literal ^)
        assert [s.study_uid for s in by_name] == [orthanc.studies["demo"]]
        demo = by_name[0]
        assert (demo.patient_id, demo.birth_date, demo.study_date) == ("mg-demo", "19700101", "20240105")
        assert demo.description == "Brain MRI demo" and demo.accession == "ACC-DEMO" and "MR" in demo.modalities
        assert (demo.n_series, demo.n_instances) == (1, 5)
        assert {s.study_uid for s in c.find_studies(Query(patient_id="mg-*"))} >= {
            orthanc.studies[k] for k in ("demo", "send", "two-a", "empty", "big")
        }
        in_2024 = {s.patient_id for s in c.find_studies(Query(study_date="20240101-20241231"))}
        assert {"mg-demo", "mg-send"} <= in_2024 and "mg-two" not in in_2024 and "mg-big" not in in_2024
        assert [s.patient_id for s in c.find_studies(Query(accession="ACC-DEMO"))] == ["mg-demo"]
        mr = {s.patient_id for s in c.find_studies(Query(modality="MR"))}
        assert "mg-demo" in mr and "mg-empty" not in mr
        assert c.find_studies(Query(patient_id="nobody-here")) == []


def test_find_series(server, orthanc):
    with connect(server) as c:
        series = c.find_series(orthanc.studies["two-a"])
    by_uid = {s.series_uid: s for s in series}
    assert set(by_uid) == {orthanc.series["two-a"], orthanc.series["two-b"], orthanc.series["two-sr"]}
    assert by_uid[orthanc.series["two-sr"]].modality == "SR" and not by_uid[orthanc.series["two-sr"]].is_image
    assert by_uid[orthanc.series["two-a"]].n_instances == 5


def test_get_series_into_cache_equals_the_source(server, orthanc, cache):
    seen = []
    with connect(server) as c:
        info, folder = retrieve_series(c, cache, orthanc.studies["demo"], progress=lambda d, t: seen.append((d, t)))
    assert info.series_uid == orthanc.series["demo"]
    assert seen[-1] == (5, 5) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(list(folder.glob("*.dcm"))) == 5 and not list(cache.incoming_dir.iterdir())
    got, src = load_study(folder), load_study(orthanc.files["demo"][0].parent)
    np.testing.assert_array_equal(got.data, src.data)
    np.testing.assert_allclose(got.affine, src.affine)
    # a second get is served by the cache (same folder, nothing retrieved)
    with connect(server) as c:
        _, again = retrieve_series(c, cache, orthanc.studies["demo"], progress=lambda d, t: seen.append((d, t)))
    assert again == folder


def test_get_whole_study_appears_complete(server, orthanc, cache):
    with connect(server) as c:
        folder = retrieve_study(c, cache, orthanc.studies["two-a"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        orthanc.series[k] for k in ("two-a", "two-b", "two-sr")
    )
    assert [e.files for e in cache.entries()] and sum(e.files for e in cache.entries()) == 11


def test_send_and_find_it(server, orthanc, tmp_path):
    from app.data.head_ct import write_dicom_series

    vol = np.arange(8 * 6 * 2, dtype=np.float32).reshape(8, 6, 2)
    pid = f"mg-sent-{server.protocol}"
    paths = write_dicom_series(vol, np.eye(4), tmp_path / "new", modality="MR", patient=("MG^Sent", pid))
    with connect(server) as c:
        assert send_files(c, dicom_files([tmp_path / "new"])) == 2
        found = c.find_studies(Query(patient_id=pid))
    assert [s.study_uid for s in found] == [pydicom.dcmread(paths[0]).StudyInstanceUID]


# -- bad cases ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dicomweb", "dimse"])
def test_server_down(kind):
    port = free_port()
    text = f"http://127.0.0.1:{port}/dicom-web" if kind == "dicomweb" else f"ORTHANC@127.0.0.1:{port}"
    with connect(parse_server(text, timeout=5)) as c, pytest.raises(PacsError, match="connection refused"):
        c.echo()


def test_wrong_called_ae_title(orthanc):
    text = orthanc.dimse.replace("ORTHANC@", "NOTORTHANC@")
    with connect(parse_server(text, timeout=30)) as c:  # (a loaded CI machine must not turn this into a timeout)
        with pytest.raises(PacsError, match="rejected the association.*NOTORTHANC"):
            c.echo()


def test_http_401_403_404(orthanc, tmp_path):
    bad = parse_server(orthanc.url, username=USER, password="wrong-password-123")
    with connect(bad) as c, pytest.raises(PacsError, match="401 Unauthorized") as exc:
        c.find_studies(Query())
    assert "wrong-password-123" not in str(exc.value)
    readonly = parse_server(orthanc.url, username=READONLY_USER, password=READONLY_PASSWORD)
    with connect(readonly) as c:
        assert c.find_studies(Query(patient_id="mg-demo"))  # reading is allowed ...
        with pytest.raises(PacsError, match="403 Forbidden.*'viewer'"):  # ... storing is not
            send_files(c, orthanc.files["demo"][:1])
    wrong_root = parse_server(orthanc.url.replace("/dicom-web", "/not-dicom-web"), username=USER, password=PASSWORD)
    with connect(wrong_root) as c, pytest.raises(PacsError, match="404 Not Found.*DICOMweb root"):
        c.echo()


@pytest.mark.parametrize("kind", ["dicomweb", "dimse"])
def test_timeout_mid_transfer_keeps_nothing(orthanc, cache, kind):
    target = orthanc.server.http_port if kind == "dicomweb" else orthanc.server.dicom_port
    proxy = StallingProxy(target, pass_bytes=70000)
    try:
        if kind == "dicomweb":
            cfg = parse_server(f"http://127.0.0.1:{proxy.port}/dicom-web", username=USER, password=PASSWORD, timeout=1)
        else:
            cfg = parse_server(f"ORTHANC@127.0.0.1:{proxy.port}", timeout=1)
        seen = []
        with connect(cfg) as c, pytest.raises(PacsError, match="timeout") as exc:
            retrieve_series(c, cache, orthanc.studies["big"], progress=lambda d, t: seen.append(d))
    finally:
        proxy.close()
    assert 0 < max(seen) < BIG, exc.value  # it broke off mid-transfer ...
    assert cache.entries() == [] and _files(cache) == []  # ... and nothing half-retrieved is left


def test_huge_series_progress_and_cancel(orthanc, server, cache):
    seen, on_disk = [], []
    cancel = {"flag": False}

    def progress(done, total):
        seen.append((done, total))
        on_disk.append(len([p for p in cache.incoming_dir.rglob("*.dcm")]))  # streamed: one file per instance
        if done >= 10:
            cancel["flag"] = True

    with connect(server) as c, pytest.raises(Cancelled, match="nothing partial was kept"):
        retrieve_series(c, cache, orthanc.studies["big"], progress=progress, cancel=lambda: cancel["flag"])
    assert seen[0] == (0, BIG) and all(t == BIG for _, t in seen)
    assert 10 <= max(d for d, _ in seen) < BIG
    assert on_disk == [d for d, _ in seen]  # every instance was on disk as it arrived, none held in memory
    assert cache.entries() == [] and _files(cache) == []


def test_study_with_no_images(server, orthanc, cache):
    with connect(server) as c, pytest.raises(PacsError, match="no image series.*SR"):
        retrieve_series(c, cache, orthanc.studies["empty"])


def test_several_series_user_picks_one(server, orthanc, cache):
    with connect(server) as c:
        with pytest.raises(PacsError, match="2 image series; pick one with --series-uid") as exc:
            retrieve_series(c, cache, orthanc.studies["two-a"])
        assert orthanc.series["two-a"] in str(exc.value) and orthanc.series["two-b"] in str(exc.value)
        info, folder = retrieve_series(c, cache, orthanc.studies["two-a"], orthanc.series["two-b"])
    assert info.series_uid == orthanc.series["two-b"] and len(list(folder.iterdir())) == 5


def test_non_image_series_is_refused(server, orthanc, cache):
    with connect(server) as c, pytest.raises(PacsError, match="is a SR series"):
        retrieve_series(c, cache, orthanc.studies["two-a"], orthanc.series["two-sr"])
    assert cache.entries() == []


def test_unknown_study(server, cache):
    with connect(server) as c, pytest.raises(PacsError, match="is not on"):
        retrieve_series(c, cache, "1.2.3.4.5.6.7.8.9")


def test_store_rejected(server, orthanc, tmp_path):
    from app.io.seg import AlgorithmInfo, write_seg

    study = load_study(orthanc.files["reject"][0].parent)
    seg = write_seg(study, study.data > 100, tmp_path / "seg.dcm", AlgorithmInfo("m", "ae-l1", "", 0.1, 0.2, "0"))
    with connect(server) as c, pytest.raises(PacsError, match="rejected"):
        send_files(c, [seg])
    with connect(server) as c:
        series = c.find_series(orthanc.studies["reject"])
    assert [s.modality for s in series] == ["MR"]  # nothing was stored


def test_password_never_in_repr_or_messages(orthanc):
    cfg = parse_server(orthanc.url, username=USER, password=PASSWORD)
    assert PASSWORD not in repr(cfg) and PASSWORD not in cfg.describe() and PASSWORD not in str(cfg.to_dict())
    in_url = parse_server(orthanc.url.replace("://", f"://{USER}:{PASSWORD}@"))
    assert in_url.password == PASSWORD and PASSWORD not in in_url.url
    with connect(replace(in_url, password="x" + PASSWORD)) as c, pytest.raises(PacsError) as exc:
        c.echo()
    assert PASSWORD not in str(exc.value)
