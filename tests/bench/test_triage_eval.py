"""``bench triage``'s scoring on known worklists: AUROC of each score, ranks of the abnormal studies, top-n
fraction, AUROC per lesion load; failures are left out."""

import numpy as np
import pytest

from app.bench.triage import evaluate, markdown


def _r(sid, score, flagged, q, peaks=()):
    findings = [{"max_d": v, "mean_d": v / 2, "volume_ml": 10.0 - i} for i, v in enumerate(peaks)]
    return {"id": sid, "status": "ok", "score": score, "flagged_ml": flagged, "d_q999": q, "findings": findings}


def _mg_report(ev, loads, per_load):
    """A bench triage report of one model's + MG evaluation ``ev`` on 2 normal studies, for markdown()."""
    return {"n_normal": 2, "loads": loads, "per_load": per_load, "seed": 0,
            "models": {"m": {"mg": {**ev, "eps": 1.0, "tau": 0.2}}}}  # fmt: skip


TRUTH = [
    {"id": "n1", "abnormal": "0", "lesions": "0"},
    {"id": "n2", "abnormal": "0", "lesions": "0"},
    {"id": "a1", "abnormal": "1", "lesions": "1"},
    {"id": "a3", "abnormal": "1", "lesions": "3"},
]


def test_known_answers():
    res = [_r("n1", 1.0, 5.0, 0.1, [0.5, 0.9]), _r("n2", 3.0, 1.0, 0.2), _r("a1", 2.0, 4.0, 0.3, [0.6]),
           _r("a3", 4.0, 6.0, 0.4, [0.2, 0.95])]  # fmt: skip
    res.append({"id": "broken", "status": "failed", "error": "x"})
    ev = evaluate(res, TRUTH)
    assert (ev["studies"], ev["abnormal"], ev["normal"]) == (4, 2, 2)
    # score order a3 > n2 > a1 > n1: pairs (abnormal > normal) 3 of 4
    assert ev["auroc_score"] == pytest.approx(0.75)
    assert ev["auroc_flagged_ml"] == pytest.approx(0.75) and ev["auroc_d_q999"] == pytest.approx(1.0)
    # peak D (max over findings, 0 without): n1 0.9, n2 0, a1 0.6, a3 0.95 -> pairs 3 of 4
    assert ev["auroc_peak_d"] == pytest.approx(0.75)
    # largest finding (the first listed): n1 10, n2 0, a1 10, a3 10 -> ties count half: (0.5 + 1 + 0.5 + 1) / 4
    assert ev["auroc_largest_ml"] == pytest.approx(0.75)
    # D mass (max over findings of mean D x ml): n1 max(0.25 x 10, 0.45 x 9) = 4.05, n2 0, a1 3.0, a3 max(1.0, 4.275)
    # = 4.275 -> a3 > n1 > a1 > n2: pairs 3 of 4
    assert ev["auroc_d_mass"] == pytest.approx(0.75)
    # bootstrap intervals: inside [0, 1] and around the estimate; q99.9 D separates every resample perfectly
    for key in ("score", "d_mass", "flagged_ml"):
        lo, hi = ev[f"auroc_{key}_ci95"]
        assert 0.0 <= lo <= ev[f"auroc_{key}"] <= hi <= 1.0
    assert ev["auroc_d_q999_ci95"] == [1.0, 1.0]
    # the paired difference from the worklist's score: q99.9 D (1.0) minus score (0.75)
    assert ev["auroc_d_q999_minus_score"]["diff"] == pytest.approx(0.25)
    lo, hi = ev["auroc_d_q999_minus_score"]["ci95"]
    assert 0.0 <= lo <= hi <= 1.0
    assert ev["abnormal_ranks"] == [1, 3] and ev["top_n_abnormal_fraction"] == pytest.approx(0.5)
    assert ev["auroc_score_by_load"] == {"1": pytest.approx(0.5), "3": pytest.approx(1.0)}
    rep = {"n_normal": 2, "loads": [1, 3], "per_load": 1, "seed": 0,
           "models": {"m": {"base": {**ev, "eps": 0.0, "tau": 0.2}, "mg": {**ev, "eps": 1.0, "tau": 0.2}}}}  # fmt: skip
    md = markdown(rep)
    lo, hi = ev["auroc_score_ci95"]
    assert f"| m | base | 0 | 0.2 | 0.750 [{lo:.2f}, {hi:.2f}] | 50% | 1, 3 | 1: 0.50, 3: 1.00 |" in md
    # results without the D quantiles or the floor (written before they were recorded): those candidates left out
    assert ev["candidates"] == ["score", "largest_ml", "flagged_ml", "d_q999", "peak_d", "d_mass"]
    assert "q99.9 / median D" not in md and "| q99.9 D | peak D | D mass |" in md
    assert "| m | +MG | 0.750 [" in md and " | 1.000 [1.00, 1.00] | 0.750 [" in md
    # the screening detection (the base map, findings reported above a cut) after base and + MG, named with its cut
    rep["models"]["m"]["screen"] = {**ev, "eps": 0.0, "tau": 0.14, "report_above": 0.2288}
    lines = markdown(rep).splitlines()
    screen = [i for i, line in enumerate(lines) if line.startswith("| m | base, findings above D 0.2288 | 0 | 0.14 |")]
    assert len(screen) == 1 and lines[screen[0] - 1].startswith("| m | +MG |")


def test_modes_are_named_and_a_wrong_one_is_refused_in_one_line(tmp_path, capsys):
    from app.cli import main

    code = main(["bench", "triage", "--modes", "base,screening", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "base, mg and screen" in err and not (tmp_path / "t").exists()


def test_relative_scores_and_the_floor():
    """q99.9 / median D and q99.9 / q90 D compare the study's most deviating tissue with its own typical tissue:
    a study whose D is high everywhere (a noisy normal) ranks below one with a tail (a lesion); the intensity floor
    is scored beside."""
    res = [
        {**_r("n1", 0.9, 0, 0.9), "d_q50": 0.5, "d_q90": 0.8, "intensity_q999": 3.0},  # noisy: high everywhere
        {**_r("n2", 0.2, 0, 0.2), "d_q50": 0.1, "d_q90": 0.15, "intensity_q999": 2.0},
        {**_r("a1", 0.5, 0, 0.5), "d_q50": 0.05, "d_q90": 0.1, "intensity_q999": 2.5},  # a tail
        {**_r("a3", 0.6, 0, 0.6), "d_q50": 0.0, "d_q90": 0.3, "intensity_q999": 4.0},  # typical D 0: q99.9 / 1e-6
    ]
    ev = evaluate(res, TRUTH)
    assert ev["candidates"][-3:] == ["d_q999_rel", "d_q999_q90", "intensity_q999"]
    assert ev["auroc_d_q999"] == pytest.approx(0.5)  # n1 > a3 > a1 > n2
    # q99.9 / median: n1 1.8, n2 2, a1 10, a3 6e5 -> both abnormal above both normal
    assert ev["auroc_d_q999_rel"] == pytest.approx(1.0)
    # q99.9 / q90: n1 1.125, n2 1.33, a1 5, a3 2 -> 1.0
    assert ev["auroc_d_q999_q90"] == pytest.approx(1.0)
    # floor: n1 3, n2 2, a1 2.5, a3 4 -> pairs (a1 > n2, a3 > n1, a3 > n2) 3 of 4
    assert ev["auroc_intensity_q999"] == pytest.approx(0.75)
    md = markdown(_mg_report(ev, [1, 3], 1))
    assert "| q99.9 / median D | q99.9 / q90 D | floor: intensity q99.9 |" in md
    assert "| 1.000 [1.00, 1.00] | 1.000 [1.00, 1.00] | 0.750 [" in md


def test_split_blocks_are_the_benchmarks_and_apart():
    """--split val/test cut the studies from the benchmark's validation block / test blocks: disjoint, at least
    GAP slices apart, inside the slices with brain; all is the whole volume."""
    import numpy as np

    from app.bench.triage import split_blocks_of
    from app.data.brain_proxy import GAP
    from app.data.phantom import brain_phantom
    from app.io.study import make_study

    vol, _brain = brain_phantom((40, 48, 60), seed=1)
    study = make_study(vol, np.diag([2.0, 2.0, 2.0, 1.0]), "MR", "phantom")
    val, test = split_blocks_of(study, "val"), split_blocks_of(study, "test")
    assert len(val) == 1 and len(test) == 2 and split_blocks_of(study, "all") == [(0, 59)]
    assert split_blocks_of(study, "head-val") == split_blocks_of(study, "head-test") == [(0, 59)]  # whole heads
    (v0, v1), (a0, a1), (b0, b1) = val[0], *test
    assert a1 + GAP < v0 and v1 + GAP < b0 and 0 <= a0 and b1 <= 59


def test_bootstrap_auroc_is_sklearns_and_its_interval_narrows():
    """The bootstrap's pairwise AUROC equals scikit-learn's (ties included); the interval of a weak score over
    many studies is narrower than over few, and contains the estimate."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from app.bench.triage import _pairwise_auroc, auroc_interval

    rng = np.random.default_rng(3)
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    s = np.round(rng.normal(size=60) + 0.5 * y, 1)  # rounded: ties between classes
    assert _pairwise_auroc(s[y == 1], s[y == 0]) == pytest.approx(roc_auc_score(y, s))
    wide, narrow = auroc_interval(y[::5], s[::5]), auroc_interval(y, s)
    assert narrow[0] <= roc_auc_score(y, s) <= narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_record_refuses_another_step_budget_in_one_line(tmp_path, capsys):
    """--record writes what batch will apply into the card: not a run with its own --max-steps (exit 2, one line,
    nothing built)."""
    from app.cli import main

    code = main(["bench", "triage", "--record", "--max-steps", "5", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--record" in err and "--max-steps" in err
    assert not (tmp_path / "t").exists()


def test_lesions_found_by_volume_on_known_masks(tmp_path):
    """Each lesion (its number in the study's lesion numbers: one lesion however many pieces) falls in its volume
    bin and counts as found when the detection flags more than a tenth of its voxels; normal studies give the false
    findings per study; a failed study counts nowhere."""
    import nibabel as nib
    import numpy as np

    from app.bench.triage import LESION_IDS, lesion_bin_labels, lesions_found

    aff = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm^3 = 0.008 ml per voxel
    studies, run = tmp_path / "studies", tmp_path / "run"
    studies.mkdir()
    ids = np.zeros((40, 40, 40), np.uint16)
    ids[2:7, 2:7, 2:4] = 1  # lesion 1 in two pieces of 50 voxels: 100 voxels, 0.8 ml
    ids[2:7, 2:7, 10:12] = 1
    ids[20:25, 2:7, 2:10] = 2  # 200 voxels, 1.6 ml
    ids[2:9, 20:30, 20:30] = 3  # 700 voxels, 5.6 ml
    pred = np.zeros(ids.shape, np.uint8)
    pred[2:7, 2:4, 10] = 1  # 10 voxels of lesion 1's second piece, and one of its first:
    pred[2, 2, 2] = 1  # 11 of 100: found (more than a tenth)
    pred[20:24, 2:7, 2] = 1  # exactly 20 of 200: not found
    pred[2:9, 20:30, 20:30] = 1  # all of it
    pred[35:38, 35:38, 35:38] = 1  # a false finding beside
    for sid, t, p in (("a1", ids, pred), ("a2", ids, 0 * pred), ("n1", None, pred), ("n2", None, pred)):
        if t is not None:
            nib.save(nib.Nifti1Image(t, aff), studies / f"{sid}{LESION_IDS}")
        (run / sid).mkdir(parents=True)
        nib.save(nib.Nifti1Image(p, aff), run / sid / "mask.nii.gz")

    # result.json lists the findings in label order (largest first) with their highest D. The mask above has five:
    # lesion 3 (700 voxels), the one beside (27), lesion 2's slab (20), lesion 1's 10 voxels and its single voxel
    def found(*max_d):
        return [{"max_d": v} for v in max_d]

    res = [
        {"id": "a1", "status": "ok", "outputs": {"mask": "mask.nii.gz"}, "findings": found(0.9, 0.5, 0.2, 0.4, 0.3)},
        {"id": "a2", "status": "ok", "outputs": {"mask": "mask.nii.gz"}, "findings": []},
        {"id": "n1", "status": "ok", "outputs": {"mask": "mask.nii.gz"}, "findings": found(0.8, 0.6, 0.1, 0.1, 0.1)},
        {"id": "n2", "status": "ok", "outputs": {"mask": "mask.nii.gz"}, "findings": found(0.7, 0.3, 0.1, 0.1, 0.1)},
    ]
    res.append({"id": "broken", "status": "failed", "error": "x"})
    truth = [
        {"id": s, "abnormal": str(int(n > 0)), "lesions": str(n)}
        for s, n in (("a1", 3), ("a2", 3), ("n1", 0), ("n2", 0), ("broken", 3))
    ]
    got = lesions_found(run, studies, res, truth)
    assert lesion_bin_labels() == ["under 1 ml", "1-5 ml", "5 ml or more"]
    assert got["lesions_found"] == {
        "under 1 ml": {"found": 1, "of": 2},
        "1-5 ml": {"found": 0, "of": 2},
        "5 ml or more": {"found": 1, "of": 2},
    }
    assert got["findings_per_normal_study"] == pytest.approx(5.0)  # all five are false on a normal study
    # FROC, findings ranked by their highest D. Lesion 1 is found while its 0.4 and 0.3 findings are kept (11 of
    # 100 voxels), lesion 3 while its 0.9 one is, lesion 2 never, a2's lesions never. The normal studies' ten
    # findings rank 0.8, 0.7, 0.6, 0.3, 0.1 x 6: at 0.5 false findings per normal study (one kept) only those above
    # 0.7 are kept -> lesion 3; at 1 (two): above 0.6 -> lesion 3; at 2 (four): above 0.1 -> both; 4 and 8 likewise
    assert got["froc_lesions_found"] == {"0.5": 1, "1": 1, "2": 2, "4": 2, "8": 2} and got["froc_lesions"] == 6
    # a finding mostly outside the lesions finds none: a2 flagged as one slab of 16,000 voxels that covers lesion 3
    # entirely (700 of them, under a tenth lesion) finds nothing
    slab = np.zeros_like(pred)
    slab[:, :, 20:30] = 1  # 16,000 voxels, 700 of them lesion 3
    nib.save(nib.Nifti1Image(slab, aff), run / "a2" / "mask.nii.gz")
    res[1]["findings"] = found(0.99)
    again = lesions_found(run, studies, res, truth)
    assert again["lesions_found"] == got["lesions_found"] and again["froc_lesions_found"] == got["froc_lesions_found"]
    slab[:, :, 20:30] = 0
    slab[2:9, 20:30, 20:30] = 1  # the lesion itself plus ...
    slab[9:12, 20:30, 20:30] = 1  # ... 300 voxels beside it: 70 % lesion, a hit
    nib.save(nib.Nifti1Image(slab, aff), run / "a2" / "mask.nii.gz")
    hit = lesions_found(run, studies, res, truth)
    assert hit["lesions_found"]["5 ml or more"] == {"found": 2, "of": 2} and hit["froc_lesions_found"]["0.5"] == 2
    ev = {**evaluate([{**r, "score": i} for i, r in enumerate(res)], truth[:4], n_boot=0), **got}
    md = markdown(_mg_report(ev, [3], 2))
    assert "| lesions found, under 1 ml / 1-5 ml / 5 ml or more | findings per normal study |" in md
    assert "| 1 of 2 / 0 of 2 / 1 of 2 | 5.0 | 1 / 1 / 2 / 2 / 2 of 6 |" in md
    assert "| lesions found at <= 0.5 / 1 / 2 / 4 / 8 false findings per normal study (FROC) |" in md
    # per study, for a paired comparison of two runs (not the failed one): the first run as the base map, the one
    # whose slab hits a2's lesion 3 as + MG: 2 lesions against 1 at one false finding per normal study each, the
    # difference of their FROC at 1
    from app.bench.triage import mg_minus_base

    per = got["_per_study"]
    assert set(per["normal"]) == {"n1", "n2"} and set(per["lesions"]) == {"a1", "a2"} and len(per["lesions"]["a1"]) == 3
    paired = mg_minus_base({"base": got["_per_study"], "mg": hit["_per_study"]})
    assert (paired["found_a"], paired["found_b"], paired["diff"]) == (1, 2, 1) == (
        got["froc_lesions_found"]["1"], hit["froc_lesions_found"]["1"], 1)  # fmt: skip
    assert paired["ci95"][0] <= 1 <= paired["ci95"][1] and paired["studies"] == 4
    assert mg_minus_base({"base": got["_per_study"]}) is None  # one mode only
    rep = _mg_report(ev, [3], 2)
    rep["models"]["m"]["mg_minus_base_found"] = paired
    assert "Lesions found by + MG less the base map" in markdown(rep) and "m +1 [" in markdown(rep)


def test_studies_made_before_the_lesion_numbers_get_them_from_their_seeds(tmp_path, monkeypatch):
    """build_studies keeps each abnormal study's lesion numbers (1..n, covering its mask exactly); a folder made
    before them gets them drawn again from the seeds, the same; a study that is not its seed's draw is refused."""
    import nibabel as nib
    import numpy as np

    import app.data.brain_proxy as bp
    from app.bench.triage import LESION_IDS, build_studies
    from app.data.phantom import brain_phantom
    from app.io.study import make_study

    vol, brain = brain_phantom((48, 56, 40), seed=2)
    monkeypatch.setattr(
        bp, "held_out_subject", lambda log=print: (make_study(vol, np.diag([2.0] * 3 + [1.0]), "MR", "p"), brain)
    )
    folder = tmp_path / "studies"
    rows = build_studies(folder, 1, [3], 2, seed=5, log=lambda *a: None)
    assert [r["id"] for r in rows] == ["normal00", "lesion01-3les", "lesion02-3les"]
    assert not (folder / f"normal00{LESION_IDS}").exists()
    first = {}
    for sid in ("lesion01-3les", "lesion02-3les"):
        ids = np.asanyarray(nib.load(folder / f"{sid}{LESION_IDS}").dataobj)
        mask = np.asanyarray(nib.load(folder / f"{sid}.mask.nii").dataobj) > 0
        assert np.array_equal(ids > 0, mask) and set(np.unique(ids)) <= {0, 1, 2, 3} and ids.max() >= 2
        first[sid] = ids
        (folder / f"{sid}{LESION_IDS}").unlink()
    build_studies(folder, 1, [3], 2, seed=5, log=lambda *a: None)
    for sid, ids in first.items():
        assert np.array_equal(np.asanyarray(nib.load(folder / f"{sid}{LESION_IDS}").dataobj), ids)
    (folder / f"lesion02-3les{LESION_IDS}").unlink()
    m = nib.load(folder / "lesion02-3les.mask.nii")
    nib.save(nib.Nifti1Image(np.zeros(m.shape, np.uint8), m.affine), folder / "lesion02-3les.mask.nii")
    with pytest.raises(RuntimeError, match="differs from its seed's draw"):
        build_studies(folder, 1, [3], 2, seed=5, log=lambda *a: None)


def test_lesion_cuts_give_the_highest_cut_that_still_finds_each_lesion():
    import numpy as np

    from app.bench.triage import found_by_bin, lesion_cuts

    ids = np.zeros((10, 10, 4), np.int64)
    ids[0:5, 0:4, 0] = 1  # lesion 1: 20 voxels
    ids[6:8, 6:8, 2] = 2  # lesion 2: 4 voxels
    labels = np.zeros_like(ids)
    labels[0:5, 0:1, 0] = 1  # finding 1: 5 voxels of lesion 1
    labels[0:5, 1:3, 0] = 2  # finding 2: 10 voxels of lesion 1
    labels[5:10, 5:10, 2] = 3  # finding 3: 25 voxels, 4 of them lesion 2 (16 % in lesions: it counts)
    labels[:, :, 3] = 4  # finding 4: 100 voxels, none in a lesion
    conf = np.array([-np.inf, 0.5, 0.3, 0.2, 0.9])
    cuts = lesion_cuts(labels, 4, conf, ids, vox_ml=0.001)
    # lesion 1 needs more than 2 of its 20 voxels: finding 1 alone (5 voxels) does it, so any cut under 0.5
    # lesion 2 (4 voxels, needs 1): only finding 3 covers it
    assert cuts == [("under 1 ml", 0.5), ("under 1 ml", 0.2)]
    assert found_by_bin(cuts)["under 1 ml"] == [2, 2]
    assert found_by_bin(cuts, 0.3)["under 1 ml"] == [1, 2] and found_by_bin(cuts, 0.5)["under 1 ml"] == [0, 2]
    # a finding that lies mostly outside the lesions finds none, however confident
    labels[6:8, 6:8, 2] = 4
    assert lesion_cuts(labels, 4, conf, ids, vox_ml=0.001)[1] == ("under 1 ml", -np.inf)


def test_found_difference_counts_each_detection_at_its_own_cut_with_a_paired_interval():
    """Lesions found by b less those found by a, each at the cut that keeps one false finding per two normal
    studies, worked by hand; identical detections differ by exactly 0 in every resample; a detection that finds
    every lesion against one that finds none differs by the number of lesions."""
    from app.bench.triage import found_difference

    # rate 0.5 with 2 normal studies: one false finding allowed, the cut is the second highest normal peak
    normal_a, lesions_a = [[0.5], [0.4]], [[0.45], [0.3]]  # cut 0.4: finds 0.45 only
    normal_b, lesions_b = [[0.9], [0.8]], [[0.85], [0.95]]  # cut 0.8: finds both
    out = found_difference(normal_a, lesions_a, normal_b, lesions_b, rate=0.5, n_boot=200)
    assert (out["found_a"], out["found_b"], out["diff"]) == (1, 2, 1)
    fixed = found_difference(normal_a, lesions_a, normal_b, lesions_b, rate=0.5, n_boot=200, cuts=(0.2, 0.9))
    assert (fixed["found_a"], fixed["found_b"]) == (2, 1)  # cuts set before (on validation) are kept
    same = found_difference(normal_a, lesions_a, normal_a, lesions_a, rate=0.5, n_boot=200)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0]
    rng = np.random.default_rng(0)
    normals = [rng.uniform(0, 1, 5) for _ in range(10)]
    none = [np.full(1, -np.inf) for _ in range(8)]  # one lesion per study, never found
    every = [np.full(1, np.inf) for _ in range(8)]
    out = found_difference(normals, none, normals, every, rate=1.0, n_boot=300)
    assert out["diff"] == 8 and out["ci95"] == [8.0, 8.0]
    # a difference that rests on one study of many is not told apart from none
    lesions_b = [np.array([0.2])] * 7 + [np.array([2.0, 2.0, 2.0])]
    lesions_a = [np.array([0.2])] * 7 + [np.array([0.2, 0.2, 0.2])]
    out = found_difference(normals, lesions_a, normals, lesions_b, rate=1.0, n_boot=500)
    assert out["diff"] == 3 and out["ci95"][0] == 0.0 and out["ci95"][1] >= 3.0
    with pytest.raises(ValueError, match="same, non-empty"):
        found_difference(normals, lesions_a, normals[:-1], lesions_b)
