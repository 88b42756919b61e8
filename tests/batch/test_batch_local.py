"""``batch`` end to end on a local Dask cluster of threads (fast): per-study outputs equal ``detect``'s for the same
study, a corrupt study is recorded and does not stop the batch, the worklist is ranked by the saved scores with
the failure apart, the report is self-contained, and a rerun skips what is done and redoes what changed."""

import json

import nibabel as nib
import numpy as np
import pytest
from batch_helpers import write_phantom

from app.cli import main

STEPS = ["--max-steps", "10"]


def _batch(capsys, studies, out, model, *extra):
    code = main(
        [
            "batch",
            str(studies),
            "--model",
            str(model),
            "--out",
            str(out),
            "--local-threads",
            "--workers",
            "2",
            "--no-dashboard",
            *STEPS,
            *extra,
        ]
    )
    o, e = capsys.readouterr()
    return code, o, e


def test_batch_outputs_equal_detect_and_corrupt_study_recorded(tmp_path, studies, tiny_model, capsys):
    out = tmp_path / "out"
    code, stdout, err = _batch(capsys, studies, out, tiny_model, "--maps")
    assert code == 1, err  # one study failed
    assert "3 analysed, 0 skipped (already done), 1 failed" in stdout
    assert f"{out / 'worklist.csv'} and report.html are written every 60 s while it runs" in err
    wl = json.loads((out / "worklist.json").read_text())
    assert [e["id"] for e in wl["failures"]] == ["corrupt"] and wl["failures"][0]["error"]
    ranked = wl["studies"]
    assert sorted(e["id"] for e in ranked) == ["a", "b", "c"]
    scores = [e["score"] for e in ranked]
    assert scores == sorted(scores, reverse=True) and [e["rank"] for e in ranked] == [1, 2, 3]
    csv = (out / "worklist.csv").read_text().splitlines()
    assert csv[0].startswith("rank,id,status,score,peak_slice,n_findings,largest_ml")
    assert csv[-1].split(",")[:3] == ["", "corrupt", "failed"]
    assert [line.split(",")[1] for line in csv[1:4]] == [e["id"] for e in ranked]
    dropped = flagged = 0
    for sid in "abc":
        r = json.loads((out / sid / "result.json").read_text())
        assert r["status"] == "ok" and r["eps"] == 0.05 and r["tau"] == 0.2 and r["device"] == "cpu"
        assert r["search_precision"] == "fp32"  # the tiny card's solver (the paper's), as run
        assert len(r["model_card_sha256"]) == 64 and {"load_s", "solve_s", "total_s"} <= set(r["timings"])
        assert r["n_findings"] == len(r["findings"]) and r["score"] == r["peak_d"] == max(
            (f["max_d"] for f in r["findings"]), default=0.0
        )  # the score: the peak D of the detection
        assert r["d_q999"] > 0  # the 99.9th percentile of D over the foreground, recorded beside it
        assert 0 <= r["d_q50"] <= r["d_q90"] <= r["d_q999"] and r["intensity_q999"] > 0  # relative scores, floor
        assert r["largest_ml"] == (r["findings"][0]["volume_ml"] if r["findings"] else 0.0)
        # the same study through detect: the identical mask, the identical difference map
        det = tmp_path / f"detect-{sid}.nii.gz"
        assert (
            main(
                [
                    "detect",
                    str(studies / f"{sid}.nii.gz"),
                    "--model",
                    str(tiny_model),
                    "--out",
                    str(det),
                    "--maps",
                    str(tmp_path / f"maps-{sid}"),
                    *STEPS,
                ]
            )
            == 0
        )
        capsys.readouterr()
        np.testing.assert_array_equal(
            np.asarray(nib.load(out / sid / "mask.nii.gz").dataobj), np.asarray(nib.load(det).dataobj)
        )
        np.testing.assert_array_equal(
            np.asarray(nib.load(out / sid / "difference.nii.gz").dataobj),
            np.asarray(nib.load(tmp_path / f"maps-{sid}" / "difference.nii.gz").dataobj),
        )
        # flagged volume in ml = mask voxels x 12 mm^3
        assert r["flagged_ml"] == pytest.approx(np.asarray(nib.load(det).dataobj).sum() * 0.012)
        d_saved = np.asarray(nib.load(out / sid / "difference.nii.gz").dataobj)
        mask_saved = np.asarray(nib.load(out / sid / "mask.nii.gz").dataobj).astype(bool)
        assert not (mask_saved & ~(d_saved > 0.2)).any()
        dropped += int((d_saved > 0.2).sum() - mask_saved.sum())
        flagged += int(mask_saved.sum())
    # the card's component rule acted (components of D > tau below min_component_px are gone), and left findings
    assert dropped > 0 and flagged > 0
    bad = json.loads((out / "corrupt" / "result.json").read_text())
    assert bad["status"] == "failed" and not (out / "corrupt" / "mask.nii.gz").exists()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "corrupt" in html and 'src="http' not in html
    assert [html.index(f"<b>{e['id']}</b>") for e in ranked] == sorted(html.index(f"<b>{e['id']}</b>") for e in ranked)
    assert not list(out.rglob(".*.part"))  # no temporary files left

    # rerun: everything done is skipped (files untouched), the failure is retried
    mtimes = {sid: (out / sid / "mask.nii.gz").stat().st_mtime_ns for sid in "abc"}
    code, stdout, _ = _batch(capsys, studies, out, tiny_model, "--maps")
    assert code == 1 and "0 analysed, 3 skipped (already done), 1 failed" in stdout
    assert mtimes == {sid: (out / sid / "mask.nii.gz").stat().st_mtime_ns for sid in "abc"}
    # a changed input is redone, the others are not
    write_phantom(studies / "c.nii.gz", 9)
    (studies / "corrupt.nii.gz").unlink()
    code, stdout, _ = _batch(capsys, studies, out, tiny_model, "--maps")
    assert code == 0 and "1 analysed, 2 skipped" in stdout
    # a changed tau redoes all
    code, stdout, _ = _batch(capsys, studies, out, tiny_model, "--maps", "--tau", "0.3")
    assert code == 0 and "3 analysed, 0 skipped" in stdout
    assert json.loads((out / "a" / "result.json").read_text())["tau"] == 0.3


def test_resume_after_interrupted_client(tmp_path, studies, tiny_model):
    """Ctrl+C in the client after the first finished study: what was written is complete and kept, the rerun
    does only the rest."""
    from distributed import Client, LocalCluster

    from app.batch.inputs import expand_inputs
    from app.batch.runner import run_batch
    from app.cli import build_parser
    from app.cli.batch import make_settings

    (studies / "corrupt.nii.gz").unlink()
    args = build_parser().parse_args(["batch", str(studies), "--model", str(tiny_model), "--out", "x", *STEPS])
    settings = make_settings(args)
    refs = expand_inputs([str(studies)])
    out = studies / "results"  # inside the archive: a rerun's scan must not take its masks for studies

    def interrupt(_r):
        raise KeyboardInterrupt

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl,
        Client(cl) as client,
    ):
        with pytest.raises(KeyboardInterrupt):
            run_batch(refs, settings, out, client, window=1, progress=False, on_result=interrupt)
        done = sorted(p.parent.name for p in out.glob("*/result.json"))
        assert len(done) == 1
        wl = json.loads((out / "worklist.json").read_text())
        assert wl["n_pending"] == 2 and [e["id"] for e in wl["studies"]] == done
        assert list(out.glob("*/mask.nii.gz")) and expand_inputs([str(studies)]) == refs  # the results left out
        summary = run_batch(expand_inputs([str(studies)]), settings, out, client, progress=False)
    assert (summary.skipped, summary.done, summary.failed, summary.pending) == (1, 2, 0, 0)
    assert sorted(p.parent.name for p in out.glob("*/result.json")) == ["a", "b", "c"]
    assert json.loads((out / "batch.json").read_text())["complete"] is True


def test_the_worklist_is_written_while_the_batch_runs_and_read_back_as_unfinished(tmp_path, studies, tiny_model):
    """While a batch runs, its worklist and report are written again every ``interim_s`` seconds with the studies
    done so far; read back, such a worklist says it is unfinished, and picks up the studies finished since it was
    written. The final worklist of a finished batch says nothing of the kind."""
    import os

    from distributed import Client, LocalCluster

    from app.batch.inputs import expand_inputs
    from app.batch.runner import run_batch
    from app.cli import build_parser
    from app.cli.batch import make_settings
    from app.viewer.worklist import Worklist

    (studies / "corrupt.nii.gz").unlink()
    args = build_parser().parse_args(["batch", str(studies), "--model", str(tiny_model), "--out", "x", *STEPS])
    settings = make_settings(args)
    refs = expand_inputs([str(studies)])
    out = tmp_path / "out"
    seen = []

    seen_report = []

    def look(r):  # before the batch goes on: what a reader opening the folder now would find
        wl, report = out / "worklist.json", out / "report.html"
        seen.append((r["id"], json.loads(wl.read_text()) if wl.is_file() else None, Worklist(out)))
        seen_report.append(report.read_text() if report.is_file() else None)

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl,
        Client(cl) as client,
    ):
        summary = run_batch(refs, settings, out, client, window=1, progress=False, on_result=look, interim_s=0.0)
    assert summary.done == 3
    (first, wl1, read1), (second, wl2, read2), (third, wl3, read3) = seen
    # the first study: no worklist written yet; the folder reads as unfinished, with what is there
    assert wl1 is None and [e.id for e in read1.entries] == [first] and "No worklist.json yet" in read1.unfinished
    # after it, one written with that study and two still to do (and the report beside it)
    assert wl2["n_pending"] == 2 and [e["id"] for e in wl2["studies"]] == [first]
    assert "Not finished: 2 studies still to do" in seen_report[1]
    # the page of a batch still running reloads itself in the browser (at least 10 s apart; the batch's interval
    # here is 0), and says so; the final page does not
    page = seen_report[1]
    assert '<meta http-equiv="refresh" content="10">' in page and "reloads itself every 10 s" in page
    assert {e.id for e in read2.entries} == {first, second}  # the study finished since is included
    assert "2 studies were still to do" in read2.unfinished and "1 finished since are included" in read2.unfinished
    # the viewer follows the folder as often as the page reloads itself; a minute before a worklist exists
    assert read1.refresh_s == 60.0 and read2.refresh_s == 10.0 and "again every 10 s" in read2.unfinished
    assert wl3["n_pending"] == 1 and len(read3.entries) == 3
    final = json.loads((out / "worklist.json").read_text())
    assert final["n_pending"] == 0 and len(final["studies"]) == 3 and Worklist(out).unfinished is None
    assert seen_report[0] is None and "Not finished" not in (out / "report.html").read_text()
    assert "http-equiv" not in (out / "report.html").read_text() and final["rewrite_s"] == 0.0
    # a result older than the worklist and not in it is another run's: neither listed nor a sign of an unfinished one
    (out / "old").mkdir()
    (out / "old" / "result.json").write_text((out / "a" / "result.json").read_text().replace('"a"', '"old"'))
    os.utime(out / "old" / "result.json", (1, 1))
    wl = Worklist(out)
    assert "old" not in {e.id for e in wl.entries} and wl.unfinished is None
    (out / "worklist.json").write_text("{not json")  # a damaged worklist: the results are read, and it says so
    wl = Worklist(out)
    assert len(wl.entries) == 4 and wl.unfinished.startswith("worklist.json cannot be read")


def test_bad_command_lines_exit_2_with_one_line(tmp_path, studies, tiny_model, capsys):
    out = tmp_path / "never"
    cases = [
        [str(tmp_path / "missing.nii.gz"), "--model", str(tiny_model)],
        [str(tmp_path / "*.nothing"), "--model", str(tiny_model)],
        [str(studies), "--model", "no-such-model"],
        [str(studies), "--model", str(tiny_model), "--tau", "2"],
    ]
    for extra in cases:
        code = main(["batch", *extra, "--out", str(out), "--local-threads", "--no-dashboard"])
        _, err = capsys.readouterr()
        assert code == 2, (extra, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (extra, err)
        assert not out.exists(), extra


def test_worklist_says_how_well_its_order_triages(tmp_path, studies, tiny_model, capsys):
    """worklist.json, report.html and the command's last line carry the card's triage measurement when it applies
    to the run, and say so when it does not (never measured; another tau)."""
    import shutil

    from app.batch.task import BatchSettings
    from app.bench.triage import record_triage

    stem = tmp_path / "models" / "tiny"  # a copy: recording writes into the card
    stem.parent.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_model.with_suffix(suffix), stem.with_suffix(suffix))
    (studies / "corrupt.nii.gz").unlink()
    out = tmp_path / "out"
    code, stdout, _ = _batch(capsys, studies, out, stem)
    assert code == 0 and "never measured" in stdout.splitlines()[-1]
    assert json.loads((out / "worklist.json").read_text())["triage_evidence"]["status"] == "none"

    ev = {"auroc_score": 0.53, "auroc_score_ci95": [0.36, 0.70], "normal": 24, "abnormal": 24, "failed": 0,
          "auroc_score_by_load": {"1": 0.29, "3": 0.36, "8": 0.83},
          "lesions_found": {"under 1 ml": {"found": 1, "of": 50}, "1-5 ml": {"found": 9, "of": 30},
                            "5 ml or more": {"found": 12, "of": 14}},
          "findings_per_normal_study": 4.04}  # fmt: skip
    settings = BatchSettings.for_checkpoint(stem, 0.05, 0.2, max_steps=10)  # what the runs here apply
    assert record_triage(stem, settings, ev, "test", (1, 3, 8), 3, "bench triage ...", lambda m: None)
    assert not record_triage(stem, settings, {**ev, "failed": 1}, "val", (1,), 3, "", lambda m: None)
    card = json.loads(stem.with_suffix(".json").read_text())
    assert [(m["split"], m["auroc"]) for m in card["triage"]] == [("test", 0.53)]  # the failed run recorded nothing
    code, stdout, _ = _batch(capsys, studies, out, stem)  # the card file changed, no study's result: none redone
    assert code == 0 and "0 analysed, 3 skipped" in stdout
    last = stdout.splitlines()[-1]
    assert last.startswith("Triage not validated: AUROC 0.53 [95 % 0.36-0.70] on 48 synthetic held-out test")
    assert "24 with 1-8 lesions; by lesion count 1 / 3 / 8: 0.29 / 0.36 / 0.83)" in last  # recorded with it
    assert last.endswith("The detection found 1 of 50 lesions under 1 ml, 9 of 30 at 1-5 ml and 12 of 14 at 5 ml or "
                         "more, with 4.0 false findings per normal study.")  # fmt: skip
    wl = json.loads((out / "worklist.json").read_text())
    assert wl["triage_evidence"]["status"] == "not-validated" and wl["triage_evidence"]["measurement"]["seed"] == 3
    html = (out / "report.html").read_text()
    assert '<p class="triage warn" id="triage-evidence">Triage not validated: AUROC 0.53' in html
    assert html.index('id="triage-evidence"') < html.index("<table>")  # above the order it qualifies
    assert json.loads((out / "batch.json").read_text())["triage_evidence"]["status"] == "not-validated"

    code, stdout, _ = _batch(capsys, studies, out, stem, "--tau", "0.3")  # another operator than the measured one
    assert code == 0 and "3 analysed" in stdout
    assert "measurement was made with eps 0.05 and tau 0.2" in stdout.splitlines()[-1]
    # a recalibrated card: its studies are redone, and the measurement no longer speaks for it
    card["chosen"]["tau"] = 0.25
    stem.with_suffix(".json").write_text(json.dumps(card))
    code, stdout, _ = _batch(capsys, studies, out, stem)
    assert code == 0 and "3 analysed" in stdout and "earlier calibration" in stdout.splitlines()[-1]
    assert json.loads((out / "worklist.json").read_text())["triage_evidence"]["status"] == "stale"


def test_batch_runs_an_ensemble_card_as_detect_does(tmp_path, studies, tiny_model, capsys):
    """An ensemble of two copies of the tiny model (scales c and c / 3: its map is twice the model's): batch's
    mask and difference map are detect's, and the weights hash it records covers both members."""
    import shutil

    from viewer_study import write_ensemble

    from app.batch.task import file_sha256, model_hashes

    for name in ("a", "b"):
        for suffix in (".json", ".safetensors"):
            shutil.copy(tiny_model.with_suffix(suffix), (tmp_path / name).with_suffix(suffix))
    pair = write_ensemble(tmp_path / "pair.json", [(tmp_path / "a", 0.3), (tmp_path / "b", 0.1)], eps=0.05, tau=0.4,
                          tau_base=0.45, post={"erode_px": 1, "min_component_px": 6})  # fmt: skip
    out = tmp_path / "out"
    code, stdout, err = _batch(capsys, studies, out, pair, "--maps")
    assert code == 1, err  # the corrupt study
    r = json.loads((out / "a" / "result.json").read_text())
    assert r["status"] == "ok" and r["eps"] == 1.0 and r["tau"] == 0.4
    card_hash, weights_hash = model_hashes(tmp_path / "pair")
    assert card_hash == file_sha256(pair) and weights_hash not in (file_sha256(tmp_path / "a.safetensors"), "")
    assert r["model_card_sha256"] == card_hash
    det = tmp_path / "detect-a.nii.gz"
    argv = ["detect", str(studies / "a.nii.gz"), "--model", str(pair), "--out", str(det), "--maps", str(tmp_path / "m")]
    assert main([*argv, *STEPS]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out / "a" / "mask.nii.gz").dataobj),
                                  np.asarray(nib.load(det).dataobj))  # fmt: skip
    d_batch = np.asarray(nib.load(out / "a" / "difference.nii.gz").dataobj)
    np.testing.assert_array_equal(d_batch, np.asarray(nib.load(tmp_path / "m" / "difference.nii.gz").dataobj))
    assert d_batch.max() > 0


def test_a_card_can_have_batch_screen_with_its_base_map(tmp_path, studies, tiny_model, capsys):
    """A card whose screening choice is the base map: batch runs the base model by default and says so; --mg or
    --eps run MatchGen; --base-only and --mg together are refused in one line; detect keeps MatchGen."""
    import shutil

    from app.nets.card import card_choices

    stem = tmp_path / "models" / "tiny"
    stem.parent.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_model.with_suffix(suffix), stem.with_suffix(suffix))
    card = json.loads(stem.with_suffix(".json").read_text())
    card["screening"] = {"mode": "base", "chosen_on": "whole-head validation studies"}
    stem.with_suffix(".json").write_text(json.dumps(card))
    tau_base = card_choices(card)["tau_base"]
    (studies / "corrupt.nii.gz").unlink()
    out = tmp_path / "out"
    code, stdout, err = _batch(capsys, studies, out, stem)
    assert code == 0 and "batch runs this model's base map by default" in err and "(whole-head validation" in err
    r = json.loads((out / "a" / "result.json").read_text())
    assert r["settings"]["base_only"] is True and r["eps"] == 0.0 and r["tau"] == pytest.approx(tau_base)
    assert f"model tiny (base map, no MatchGen), tau {tau_base:.6g}" in (out / "report.html").read_text()
    code, stdout, err = _batch(capsys, studies, out, stem, "--mg")
    r = json.loads((out / "a" / "result.json").read_text())
    assert code == 0 and "base map by default" not in err and "3 analysed" in stdout  # another operator: redone
    assert r["settings"]["base_only"] is False and r["eps"] == 0.05 and r["tau"] == 0.2
    assert "model tiny + MatchGen, eps 0.05, tau 0.2" in (out / "report.html").read_text()
    code, stdout, err = _batch(capsys, studies, out, stem, "--eps", "0.03")
    assert code == 0 and json.loads((out / "a" / "result.json").read_text())["eps"] == 0.03
    with pytest.raises(SystemExit) as exc:  # a usage error: exit 2, one line
        _batch(capsys, studies, out, stem, "--mg", "--base-only")
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--base-only" in err
    det = tmp_path / "detect.nii.gz"
    assert main(["detect", str(studies / "a.nii.gz"), "--model", str(stem), "--out", str(det), *STEPS]) == 0
    assert "eps=0.05" in capsys.readouterr().out  # detect starts with MatchGen whatever the screening choice


def test_a_screening_detection_reports_only_findings_above_its_cut(tmp_path, studies, tiny_model, capsys):
    """A card whose screening detection outlines at its tau and reports a finding only when its peak D exceeds a
    cut: a plain batch writes exactly the findings above the cut (mask, result.json, report), orders the studies by
    the same score as every outlined finding gives; ``--tau`` means that tau with every finding reported."""
    import shutil

    from app.nets.card import card_choices

    stem = tmp_path / "models" / "tiny"
    stem.parent.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_model.with_suffix(suffix), stem.with_suffix(suffix))
    card = json.loads(stem.with_suffix(".json").read_text())
    card["screening"] = {"mode": "base"}
    stem.with_suffix(".json").write_text(json.dumps(card))
    tau = card_choices(card)["tau_base"]
    (studies / "corrupt.nii.gz").unlink()
    every = tmp_path / "every"
    assert _batch(capsys, studies, every, stem)[0] == 0  # the base map, every finding at tau_base
    before = {s: json.loads((every / s / "result.json").read_text()) for s in "abc"}
    peaks = sorted(f["max_d"] for r in before.values() for f in r["findings"])
    assert len(peaks) >= 3, peaks  # enough findings for a cut between them
    cut = (peaks[len(peaks) // 2 - 1] + peaks[len(peaks) // 2]) / 2
    card["screening"] = {"mode": "base", "tau": tau, "report_above": cut}
    stem.with_suffix(".json").write_text(json.dumps(card))
    out = tmp_path / "out"
    code, _, err = _batch(capsys, studies, out, stem)
    assert code == 0 and f"reported when their peak D exceeds {cut:.4g}" in err
    for s, old in before.items():
        r = json.loads((out / s / "result.json").read_text())
        assert r["report_above"] == cut and r["tau"] == tau and r["n_outlined"] == len(old["findings"])
        kept = sorted((f["voxels"], f["max_d"]) for f in old["findings"] if f["max_d"] > cut)
        assert sorted((f["voxels"], f["max_d"]) for f in r["findings"]) == kept
        mask = np.asanyarray(nib.load(out / s / "mask.nii.gz").dataobj) > 0
        assert mask.sum() == sum(v for v, _ in kept) and r["n_findings"] == len(kept)
        assert r["score"] == pytest.approx(old["score"]) and r["peak_slice"] == old["peak_slice"]  # the same order
    assert sum(len(json.loads((out / s / "result.json").read_text())["findings"]) for s in "abc") < len(peaks)
    assert f"findings reported when their peak D exceeds {cut:.6g}" in (out / "report.html").read_text()
    code, _, err = _batch(capsys, studies, out, stem, "--tau", f"{tau}")  # the user's tau: every finding
    r = json.loads((out / "a" / "result.json").read_text())
    assert code == 0 and "reported when" not in err and r["report_above"] is None
    assert len(r["findings"]) == len(before["a"]["findings"])


@pytest.mark.parametrize("screening", [None, {"mode": "base"}, {"mode": "base", "tau": 0.5, "report_above": 2.0}])
def test_bench_batch_times_what_batch_runs(tmp_path, tiny_model, screening, capsys):
    """``bench batch`` times the detection a plain ``batch`` runs with the card (and with ``--mg`` what ``batch --mg``
    runs): the same settings as the command line makes, for a card without a screening choice, with the base map,
    and with the base map's outline and reporting cut."""
    import shutil

    from app.bench.batch_speed import bench_settings
    from app.cli import build_parser
    from app.cli.batch import make_settings
    from app.nets.card import card_choices, read_card

    stem = tmp_path / "models" / "tiny"
    stem.parent.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_model.with_suffix(suffix), stem.with_suffix(suffix))
    card = json.loads(stem.with_suffix(".json").read_text())
    if screening is not None:
        tau_base = card_choices(card)["tau_base"]
        sc = dict(screening)  # the outline and the cut as factors of tau_base
        if "tau" in sc:
            sc.update(tau=sc["tau"] * tau_base, report_above=sc["report_above"] * tau_base)
        card["screening"] = sc
    stem.with_suffix(".json").write_text(json.dumps(card))
    card = read_card(stem)
    for extra in ([], ["--mg"]):
        args = build_parser().parse_args(
            ["batch", "x", "--model", str(stem), "--out", "o", "--threads", "1", "--device", "cpu", *extra]
        )
        want = make_settings(args)
        got, detection = bench_settings(stem.resolve(), card, mg=bool(extra))
        assert got == want, (extra, got, want)
        assert got.base_only == (screening is not None and not extra)
        assert detection["label"].startswith("base map" if got.base_only else "+MG")
    capsys.readouterr()


def test_task_timeline_known_answer():
    """``bench batch`` splits the time beyond the tasks with each task's own clock: idle between tasks on one worker,
    the first task on each worker against the later ones, the end imbalance and what lies outside the tasks' span.
    A result without its clock (a study recorded as lost by the client) is left out."""
    from app.bench.batch_speed import task_timeline

    results = [
        {"worker": "w1", "bench_clock": [12.1, 13.1]},  # w1: 2.0, idle 0.1, 1.0 -> ends at 13.1
        {"worker": "w2", "bench_clock": [13.8, 15.3]},
        {"worker": "w1", "bench_clock": [10.0, 12.0]},
        {"worker": "w2", "bench_clock": [10.5, 13.5]},  # w2: 3.0, idle 0.3, 1.5 -> ends at 15.3
        {"worker": "w1", "status": "failed"},
    ]
    t = task_timeline(results, wall_s=6.0)
    assert t["tasks"] == 4 and t["workers"] == 2
    assert t["compute_s_mean"] == pytest.approx(7.5 / 4)
    assert t["first_task_s_mean"] == pytest.approx(2.5) and t["later_task_s_mean"] == pytest.approx(1.25)
    assert t["idle_between_tasks_ms_mean"] == pytest.approx(200.0)
    assert t["idle_between_tasks_ms_max"] == pytest.approx(300.0)
    assert t["span_s"] == pytest.approx(5.3)
    assert t["end_imbalance_s"] == pytest.approx((15.3 - 13.1) / 2)
    assert t["outside_span_s"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="clock"):
        task_timeline(results[-1:], wall_s=1.0)


def test_timed_study_is_the_batch_task(tmp_path, tiny_model):
    """The task ``bench batch`` times is ``batch``'s own (the same result.json), with its start and end added."""
    from app.batch.inputs import expand_inputs
    from app.batch.task import BatchSettings
    from app.bench.batch_speed import make_studies, timed_study

    ref = expand_inputs([str(p) for p in make_studies(tmp_path / "in", 1, 4, size=32)])[0]
    settings = BatchSettings.for_checkpoint(tiny_model, 1.0, 0.1, max_steps=2)
    r = timed_study(ref, settings, str(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / ref.id / "result.json").read_text())
    assert r["status"] == "ok" and {k: v for k, v in r.items() if k != "bench_clock"} == saved
    t0, t1 = r["bench_clock"]
    assert 0 < t1 - t0 and r["timings"]["total_s"] <= t1 - t0
