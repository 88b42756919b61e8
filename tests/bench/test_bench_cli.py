"""``bench quality`` and ``bench speed`` end to end on a tiny model and a tiny benchmark directory."""

import json

import numpy as np
import pytest
import torch

from app.bench.speed import SAME_LOSS_RTOL, model_eps_tau, phantom_slices, run_speed, summary_markdown, write_outputs
from app.cli import main
from app.core.matchgen import SolverOptions
from app.core.protocol import choose_intensity_baseline, evaluate_intensity_baseline
from app.data.splits import load_split, save_split
from app.nets import ModelConfig, create_model
from app.nets.checkpoint import save_checkpoint

S = 32


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=S, latent_dim=8, width=4)).freeze()
    return save_checkpoint(m, tmp_path / "models" / "tiny", {"chosen": {"eps": 0.5, "tau": 0.2}})


def make_bench(root, seed=0, test_seed=1):
    for split, n, sd in (("val", 8, seed), ("test", 10, test_seed)):
        imgs, masks = phantom_slices(n, S, seed=sd)
        save_split(root, split, imgs, masks, [f"{split}{i}" for i in range(n)])
    imgs, _ = phantom_slices(6, S, seed=9, lesions=False)
    save_split(root, "train", imgs, None, [f"t{i}" for i in range(6)])
    return root


def quality(data, model, out, *extra):
    args = ["bench", "quality", "--data", str(data), "--models", str(model), "--out", str(out)]
    return main([*args, "--max-steps", "5", "--val-subset", "4", "--no-progress", *extra])


def test_quality_report_has_the_table_json_and_plot(tmp_path, tiny_model, capsys):
    data = make_bench(tmp_path / "bench")
    blocks = {"val": [[3, 5], [9, 10]], "test": [[0, 1], [7, 7]]}
    meta = {"name": "brain-proxy", "layout": "interleaved", "layout_blocks": blocks}
    (data / "meta.json").write_text(json.dumps(meta))
    assert quality(data, tiny_model, tmp_path / "out") == 0
    rep = json.loads((tmp_path / "out" / "quality.json").read_text())
    md = (tmp_path / "out" / "quality.md").read_text()
    # the report says which slices of the held-out subject validation and test are
    assert rep["data_layout"] == "interleaved: val z 3-5, 9-10; test z 0-1, 7-7"
    assert "Layout of the held-out subject's slices: interleaved: val z 3-5, 9-10; test z 0-1, 7-7." in md
    assert (tmp_path / "out" / "quality.png").stat().st_size > 1000
    assert "| tiny |" in md and "| tiny + MG |" in md and "| intensity threshold |" in md
    row = rep["models"][0]
    assert row["eps_source"] == "calibrated here on validation"  # the card has no eps_range
    assert row["choice"]["eps"] in row["eps_grid"] and row["choice"]["eps"] > 0
    assert row["mg"]["n_images"] == rep["n_test_abnormal"] == row["base"]["n_images"]
    # the baseline in the report is exactly the protocol's, computed directly
    val, test = load_split(data, "val"), load_split(data, "test")
    ch = choose_intensity_baseline(val, subset=4)
    sc = evaluate_intensity_baseline(test, ch.tau)
    assert rep["intensity_baseline"]["choice"]["tau"] == ch.tau
    assert rep["intensity_baseline"]["test"]["dice_mean"] == pytest.approx(sc.dice_mean)
    assert "bench quality" in rep["command"] and "tiny + MG" in capsys.readouterr().out
    # by brain area: 32 px slices all fall in the first bin, which then repeats the paired difference of them all
    bins = row["by_area"]["dice"]
    assert [b["n"] for b in bins] == [row["base"]["n_images"], 0, 0, 0]
    assert bins[0]["mean"] == pytest.approx(row["paired"]["dice"]["mean"])
    assert bins[0]["ci95"] == pytest.approx(row["paired"]["dice"]["ci95"])
    val_abnormal = rep["n_val_abnormal"]
    assert row["by_area"]["val_slices"] == [val_abnormal, 0, 0, 0]  # 32 px validation slices: the first bin too
    assert f"| tiny | 0-3,000 | {val_abnormal} | {bins[0]['n']} |" in md and "| tiny | >= 7,000 | 0 | 0 |" in md
    # by the lesion's area on the slice: each bin's means are those of its slices, the threshold's among them
    la = row["by_lesion_area"]["test"]
    px = np.asarray(la["lesion_px"])
    masks = np.asarray(test.masks)
    want_px = masks.reshape(len(masks), -1).astype(bool).sum(axis=1)
    assert px.tolist() == want_px[want_px > 0].tolist() and len(px) == row["mg"]["n_images"]
    assert sum(b["n"] for b in la["dice"]) == len(px)
    mg, base = np.asarray(row["mg"]["dice_per_image"]), np.asarray(row["base"]["dice_per_image"])
    thr = np.asarray(sc.dice_per_image)
    lines = [ln for ln in md.splitlines() if ln.startswith("| tiny | ") and " | Dice" not in ln]
    for b in la["dice"]:
        sel = (px >= b["lo"]) & (px < (b["hi"] if b["hi"] is not None else np.inf))
        assert b["n"] == sel.sum()
        if sel.any():
            assert b["b_mean"] == pytest.approx(mg[sel].mean()) and b["a_mean"] == pytest.approx(base[sel].mean())
            span = f"{b['lo']:,.0f}-{b['hi'] - 1:,.0f}" if b["hi"] is not None else f">= {b['lo']:,.0f}"
            cells = f"| tiny | test | {span} | {b['n']} | {100 * thr[sel].mean():.1f} | {100 * base[sel].mean():.1f} | "
            assert any(ln.startswith(cells) for ln in lines), cells


def test_quality_splits_the_second_style_by_lesion_area_too(tmp_path, tiny_model):
    data = make_bench(tmp_path / "bench")
    imgs, masks = phantom_slices(6, S, seed=5)
    save_split(data, "test_b", imgs, masks, [f"b{i}" for i in range(6)])
    assert quality(data, tiny_model, tmp_path / "out") == 0
    rep = json.loads((tmp_path / "out" / "quality.json").read_text())
    la = rep["models"][0]["by_lesion_area"]["test_b"]
    px = masks.reshape(len(masks), -1).astype(bool).sum(axis=1)
    assert la["lesion_px"] == px[px > 0].tolist()
    mg = np.asarray(rep["models"][0]["styles"]["test_b"]["mg"]["dice_per_image"])
    first = la["dice"][0]  # 32 px phantoms: every lesion under 50 px
    assert first["n"] == len(mg) and first["b_mean"] == pytest.approx(mg.mean())
    thr = np.mean(rep["intensity_baseline"]["styles"]["test_b"]["dice_per_image"])
    md = (tmp_path / "out" / "quality.md").read_text()
    assert f"| tiny | test_b | 1-49 | {len(mg)} | {100 * thr:.1f} |" in md


def test_quality_pairs_whole_volumes_of_base_and_mg(tmp_path, tiny_model):
    """With validation and test volumes, the report pairs + MG's volume Dice with the base's over the same
    realisations (the unit detect and the viewer apply) and prints the interval in the whole-volume table."""
    from app.core.metrics import paired_difference
    from app.data.splits import save_volumes

    data = make_bench(tmp_path / "bench")
    for split, seed in (("val", 3), ("test", 4)):
        imgs, masks = phantom_slices(12, S, seed=seed)
        vol = imgs.reshape(4, 3, *imgs.shape[1:])
        m = masks.reshape(4, 3, S, S).astype(bool)
        names = [[f"{split}{r}z{z}" for z in range(3)] for r in range(4)]
        save_volumes(data, split, vol, m, m.astype(np.uint8), names, {"seeds": [0, 1, 2, 3], "z": [0, 1, 2]})
    assert quality(data, tiny_model, tmp_path / "out") == 0
    row = json.loads((tmp_path / "out" / "quality.json").read_text())["models"][0]
    v = row["volumes"]["test"]
    assert v["paired"] == paired_difference(v["base"]["volume_dice"], v["mg"]["volume_dice"]) and v["paired"]["n"] == 4
    lo, hi = v["paired"]["ci95"]
    want = f"{100 * v['paired']['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    md = (tmp_path / "out" / "quality.md").read_text()
    assert f"| tiny + MG | {100 * v['mg']['volume_dice_mean']:.1f} | {want} |" in md


def test_quality_areas_follow_the_abnormal_slices_in_order():
    from app.bench.quality import _abnormal_areas

    masks = np.zeros((4, 8, 8), bool)
    masks[1, 2, 2] = masks[3, 5, 5] = True  # slices 1 and 3 abnormal
    fg = np.zeros((4, 8, 8), bool)
    for i, n in enumerate((5, 7, 11, 13)):
        fg[i].flat[:n] = True

    class Split:
        pass

    split = Split()
    split.masks = np.concatenate([np.zeros((2, 8, 8), bool), masks])  # two slices left out by the subset
    keep = {"idx": np.array([2, 3, 4, 5]), "foreground": fg}
    assert _abnormal_areas(split, keep).tolist() == [7, 13]


def test_quality_lesion_areas_follow_the_abnormal_slices_and_split_the_table():
    from app.bench.quality import LESION_AREA_EDGES, _abnormal_lesion_px, lesion_area_markdown
    from app.core.metrics import paired_by_bins

    masks = np.zeros((6, 40, 40), bool)
    for i, n in ((1, 10), (2, 60), (4, 300), (5, 900)):  # slices 0 and 3 normal
        masks[i].flat[:n] = True

    class Split:
        pass

    split = Split()
    split.masks = np.concatenate([np.zeros((1, 40, 40), bool), masks])  # one slice left out by the subset
    px = _abnormal_lesion_px(split, {"idx": np.arange(1, 7)})
    assert px.tolist() == [10, 60, 300, 900]
    base, mg, thr = [0.0, 0.1, 0.2, 0.3], [0.05, 0.3, 0.4, 0.5], [0.0, 0.0, 0.6, 0.8]
    entry = {"lesion_px": px.tolist(), "dice": paired_by_bins(base, mg, px, LESION_AREA_EDGES)}
    other = {"lesion_px": [5, 5], "dice": paired_by_bins([0.1, 0.3], [0.2, 0.6], [5, 5], LESION_AREA_EDGES)}
    report = {
        "intensity_baseline": {"test": {"dice_per_image": thr}, "styles": {"test_b": {"dice_per_image": [0.5, 0.7]}}},
        "models": [{"model": "m", "by_lesion_area": {"edges": [1, 50], "test": entry, "test_b": other}}],
    }
    md = lesion_area_markdown(report)
    assert "| m | test | 1-49 | 1 | 0.0 | 0.0 | 5.0 | +5.0" in md
    assert "| m | test | 50-199 | 1 | 0.0 | 10.0 | 30.0 | +20.0" in md
    assert "| m | test | 200-799 | 1 | 60.0 | 20.0 | 40.0 | +20.0" in md
    assert "| m | test | >= 800 | 1 | 80.0 | 30.0 | 50.0 | +20.0" in md
    assert "| m | test_b | 1-49 | 2 | 60.0 | 20.0 | 40.0 | +20.0" in md and "| m | test_b | >= 800 | 0 | - |" in md
    # a threshold scored on other slices is not put beside the models
    report["intensity_baseline"]["test"]["dice_per_image"] = thr[:3]
    assert "| m | test | >= 800 | 1 | n/a | 30.0 |" in lesion_area_markdown(report)


def test_quality_never_chooses_on_test(tmp_path, tiny_model):
    a = make_bench(tmp_path / "a", test_seed=1)
    b = make_bench(tmp_path / "b", test_seed=2)  # same validation, different test split
    assert quality(a, tiny_model, tmp_path / "oa") == 0
    assert quality(b, tiny_model, tmp_path / "ob") == 0
    ra = json.loads((tmp_path / "oa" / "quality.json").read_text())
    rb = json.loads((tmp_path / "ob" / "quality.json").read_text())
    for key in ("eps", "tau", "base_tau", "dice"):
        assert ra["models"][0]["choice"][key] == rb["models"][0]["choice"][key]
    assert ra["intensity_baseline"]["choice"] == rb["intensity_baseline"]["choice"]
    assert ra["models"][0]["mg"] != rb["models"][0]["mg"]  # the test scores do differ


def test_quality_errors_are_one_line(tmp_path, tiny_model, capsys):
    assert quality(tmp_path / "missing", tiny_model, tmp_path / "o") == 2
    data = make_bench(tmp_path / "bench")
    assert quality(data, tmp_path / "nope", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("matchgen bench: error:") for e in err)
    assert not (tmp_path / "o" / "quality.json").exists()


def test_speed_figures_and_summary(tmp_path, tiny_model):
    res = run_speed(
        str(tiny_model),
        "cpu",
        None,
        n_converge=2,
        n_volume=8,
        n_reference=2,
        batch_size=4,
        gui=False,
        rss=False,
        log=lambda m: None,
    )
    for key in ("slice_converge_s", "volume_s_per_slice", "speedup_vs_reference", "flops_fraction"):
        assert res[key] > 0, key
    assert res["slice_window_slices"] == 1 and "slice_window_s" not in res  # no z window in this card
    assert "slice_window_base_s" not in res
    # the decoder alone is at least as fast as the decoder inside the solve
    assert res["decoder_only_gflops"] >= res["decoder_gflops_achieved"] * 0.5
    assert 0 < res["solve_time_in_decoder"] <= 1
    # the solver step and the decoder step were timed on the same batch; their ratio is what is reported
    assert res["solver_step_seconds"] > 0 and res["decoder_step_seconds"] > 0
    assert res["solver_step_over_decoder"] == pytest.approx(res["solver_step_seconds"] / res["decoder_step_seconds"])
    # 20 steps = 20 marginal steps + the per-solve cost, by construction of the split
    assert 20 * res["solver_marginal_step_seconds"] + res["solver_fixed_seconds_per_solve"] == pytest.approx(
        20 * res["solver_step_seconds"]
    )
    abl = res["volume_ablation"]
    assert set(abl) == {"no BatchNorm folding", "stock layout"}
    for v in abl.values():  # the inference choices change rounding only: same detections on these slices
        assert v["volume_s_per_slice"] > 0 and v["dice"] == pytest.approx(res["volume_dice"], abs=0.02)
    prof = res["decoder_profile"]
    assert prof and all(p["ms_per_step"] >= 0 for p in prof) and sum(p["share"] for p in prof) <= 1.001
    assert any("conv" in p["op"] for p in prof)  # a conv decoder's step is dominated by its convolutions
    assert res["eps"] == 0.5 and res["tau"] == 0.2  # from the card's choice
    ref, fast = res["reference"], res["fast_batched"]
    assert len(ref["loss"]) == 2 and len(fast["loss"]) == 2
    rel = (np.array(fast["loss"]) - ref["loss"]) / np.array(ref["loss"])
    assert res["same_final_loss"] == bool((rel <= SAME_LOSS_RTOL).all())
    assert res["solver_reference"]["method"] == "penalty" and res["solver_reference"]["lr"] == 1e-3
    # the reference runs to convergence: within 0.1 % of the best loss known for each slice
    best = np.array(res["best_known_loss"])
    assert ref["converged"] and max(ref["gap_to_best"]) <= SAME_LOSS_RTOL and not ref["stopped_at_step_cap"]
    for key in ("reference", "fast_batched", "fast_one_at_a_time"):  # the best known is the best of all runs
        assert (np.array(res[key]["loss"]) >= best).all() and min(res[key]["gap_to_best"]) >= 0
    # compared at equal final loss: the target is the worse final loss, and the speedup is the reference's time to
    # reach it over the fast solver's whole batched run (which ends at or below it)
    target = np.array(res["equal_loss_target"])
    assert (target >= np.array(ref["loss"])).all() and (target >= np.array(fast["loss"])).all()
    assert all(0 < s <= ref["seconds_per_slice"] * 2 for s in ref["seconds_to_target"])
    assert res["speedup_vs_reference"] == pytest.approx(sum(ref["seconds_to_target"]) / (fast["seconds_per_slice"] * 2))
    assert res["solver_fast"]["method"] == "spg" and sum(res["fast_batched"]["steps"]) > 0
    # an uncalibrated card: the project's fastest solver in channels_last, and the report says so
    assert res["layout"] == "channels_last" and res["solver_fast_from"].startswith("FAST")
    js, md = write_outputs(res, tmp_path / "speed")
    assert json.loads(js.read_text())["threads"] == torch.get_num_threads()
    text = md.read_text()
    assert "| slice_converge_s |" in text and "| peak_rss_mb | n/a |" in text
    assert "One solver step on the same batch" in text
    assert summary_markdown(res) == text


def test_scroll_figure_drives_the_viewer_on_the_demo(tiny_model):
    """slice_scroll_s runs the viewer's controller on the bundled demo from the slice it opens on (its largest
    lesion, 73), two Up keys each way; the report names both figures (timings themselves are bench speed's)."""
    from app.bench.speed import scroll_latency, summary_markdown

    torch.set_num_threads(1)
    res = scroll_latency(str(tiny_model), "cpu", dwell_s=0.3)
    sc = res["slice_scroll"]
    assert sc["from_slice"] == 73 and len(sc["ahead_s"]) == len(sc["without_s"]) == 2
    assert res["slice_scroll_s"] == max(sc["ahead_s"]) >= 0 and res["slice_scroll_cold_s"] == max(sc["without_s"]) > 0
    md = summary_markdown({**_minimal_report(), **res})
    assert "| slice_scroll_s |" in md and "solved ahead" in md and "from slice 73, Up after 0.3 s" in md


def _minimal_report():
    return {"model": "m", "model_family": "ae-l1", "device_name": "cpu", "torch": "t", "threads": 1, "cpu_count": 1,
            "loadavg_before": [0], "loadavg_after": [0], "slices": "s", "eps": 0.5, "eps_rule": "r", "tau": 0.2,
            "solver_fast": {}, "reference_skipped": "not run"}  # fmt: skip


def test_speed_times_the_operator_the_card_applies(tmp_path):
    """A calibrated card's solver, step budget, memory layout and post-processing are what ``bench speed`` times
    (as ``detect`` applies them); the ablation flips the card's layout, not a fixed one."""
    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=S, latent_dim=8, width=4)).freeze()
    settings = {
        "solver": "fast",
        "max_steps": 7,
        "channels_last": False,
        "solver_options": {"method": "spg", "precision": "bf16", "max_steps": 100, "patience": 10},
    }
    stem = save_checkpoint(m, tmp_path / "models" / "cal", {
        "chosen": {"eps": 0.5, "tau": 0.2}, "calibration": {"settings": settings},
        "postprocess": {"median_size": 3, "erode_px": 0, "min_component_px": 0, "z_mm": 6.0}})  # fmt: skip
    quiet = {
        "n_converge": 1,
        "n_volume": 4,
        "n_reference": 1,
        "batch_size": 4,
        "gui": False,
        "rss": False,
        "profile_decoder": False,
        "reference": False,
        "log": lambda m: None,
    }
    res = run_speed(str(stem), "cpu", None, **quiet)
    assert res["solver_fast_from"] == "model card" and res["layout"] == "stock"
    assert res["solver_fast"]["max_steps"] == 7 and res["solver_fast"]["method"] == "spg"
    assert res["slice_converge_steps_median"] <= 7 and res["volume_steps_mean"] <= 7
    assert set(res["volume_ablation"]) == {"no BatchNorm folding", "channels_last layout"}
    assert "7 steps, stock layout (model card)" in summary_markdown(res)
    # the card's z window (6 mm: 3 slices at 2 mm) is what a new slice costs in the viewer: timed, with a goal
    assert res["slice_window_slices"] == 3 and res["slice_window_s"] > 0 and res["slice_window_next_s"] > 0
    assert "| slice_window_s |" in summary_markdown(res) and "spans 3 slices at 2 mm" in summary_markdown(res)
    # and the base map the viewer shows first meanwhile
    assert res["slice_window_base_s"] > 0 and "(slice_window_base_s)" in summary_markdown(res)
    # the same card in channels_last: the ablation's other layout is the stock one
    settings["channels_last"] = True
    stem2 = save_checkpoint(m, tmp_path / "models" / "cal2", {
        "chosen": {"eps": 0.5, "tau": 0.2}, "calibration": {"settings": settings}})  # fmt: skip
    res2 = run_speed(str(stem2), "cpu", None, **quiet)
    assert res2["layout"] == "channels_last" and set(res2["volume_ablation"]) == {"no BatchNorm folding",
                                                                                  "stock layout"}  # fmt: skip


def test_time_to_loss_known_answers():
    from app.bench.speed import time_to_loss

    secs, loss = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.9, 0.5, 0.5, 0.3])
    assert time_to_loss(secs, loss, 0.5, 0.3, 0.45) == 0.2  # the first step at or below the target
    assert time_to_loss(secs, loss, 0.3, 0.3, 0.45) == 0.4
    assert time_to_loss(secs, loss, 0.25, 0.25, 0.45) == 0.45  # only the float32 re-evaluated final loss: whole run
    assert time_to_loss(secs, loss, 0.1, 0.3, 0.45) == float("inf")  # never reached


def test_the_papers_stall_rule_is_reported_with_its_gap(tmp_path, tiny_model):
    """With the shipped stall rule (25 steps, 1e-4) as reference the report still states its gap to the best
    known loss instead of calling it converged when it is not."""
    res = run_speed(str(tiny_model), "cpu", None, n_converge=1, n_volume=4, n_reference=2, batch_size=4, gui=False,
                    rss=False, reference_options=SolverOptions(), profile_decoder=False, ablation=False,
                    log=lambda m: None)  # fmt: skip
    gaps = res["reference"]["gap_to_best"]
    assert min(gaps) >= 0 and res["reference"]["converged"] == (max(gaps) <= SAME_LOSS_RTOL)
    assert "gap to the best known loss" in summary_markdown(res)


def test_eps_tau_fallbacks_are_stated_and_shared_with_detect():
    from app.cli.detect import choose_parameters

    cards = [
        {"eps_range": [0.0, 2.0], "chosen": {"eps": 1.5, "tau": 0.1}},
        {"eps_range": {"eps_max": 4.0}},
        {"chosen": {"eps": 1.5, "tau": 0.1}},  # no range: the eps is clamped into the fallback [0, 0.6]
        {},
    ]
    expected = [(1.5, 0.1), (0.1, 0.2), (0.6, 0.1), (0.1, 0.2)]
    for card, want in zip(cards, expected, strict=True):
        eps, tau, rule = model_eps_tau(card)
        assert (eps, tau) == want
        assert choose_parameters(card, None, None, False)[:2] == want  # bench speed and detect agree
    assert model_eps_tau(cards[0])[2] == "chosen on validation (model card)"
    assert "fallback eps=0.1" in model_eps_tau(cards[1])[2] and "fallback tau=0.2" in model_eps_tau({})[2]


def test_quality_can_take_the_cards_validation_choice(tmp_path, capsys):
    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=S, latent_dim=8, width=4)).freeze()
    card = {
        "eps_range": {"eps_max": 0.6, "grid": [0.0, 0.3, 0.6]},
        "chosen": {"eps": 0.3, "tau": 0.15, "tau_base": 0.2, "val_dice": 0.4, "val_dice_base": 0.3},
        "calibration": {"settings": {"max_steps": 7, "solver": "fast", "solver_options": {"method": "spg"}}},
    }
    stem = save_checkpoint(m, tmp_path / "models" / "carded", card)
    data = make_bench(tmp_path / "bench")
    assert quality(data, stem, tmp_path / "o", "--choice", "card") == 0
    row = json.loads((tmp_path / "o" / "quality.json").read_text())["models"][0]
    assert (row["choice"]["eps"], row["choice"]["tau"], row["choice"]["base_tau"]) == (0.3, 0.15, 0.2)
    assert row["eps_grid"] == [0.0, 0.3, 0.6] and "card" in row["choice"]["source"]
    assert set(row["residuals"]["mg"]) == {"lesion_residual", "tissue_residual", "contrast"}
    assert "| lesion / tissue |" in (tmp_path / "o" / "quality.md").read_text()
    # applied with the card's solver, budget and layout (as detect and the viewer apply it)
    assert row["solver"]["method"] == "spg" and row["solver"]["max_steps"] == 7 and row["solver"]["channels_last"]
    no_range = save_checkpoint(m, tmp_path / "models" / "bare", {"chosen": card["chosen"]})
    assert quality(data, no_range, tmp_path / "o2", "--choice", "card") == 2
    assert "eps range" in capsys.readouterr().err


def test_speed_compile_ablation_is_opt_in_and_reported(tmp_path, tiny_model, monkeypatch):
    compiled = []

    def fake_compile(fn, **kw):  # the plumbing, without a minute of C++ compilation
        compiled.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    common = dict(n_converge=1, n_volume=4, n_reference=1, batch_size=4, gui=False, rss=False, log=lambda m: None)
    common["reference_options"] = SolverOptions(max_steps=20)
    res = run_speed(str(tiny_model), "cpu", None, profile_decoder=False, **common)
    assert "torch.compile(decode)" not in res["volume_ablation"] and not compiled
    res = run_speed(str(tiny_model), "cpu", None, profile_decoder=False, compile_decoder=True, **common)
    entry = res["volume_ablation"]["torch.compile(decode)"]
    assert len(compiled) == 1 and entry["compile_s"] >= 0 and entry["volume_s_per_slice"] > 0
    assert entry["dice"] == pytest.approx(res["volume_dice"], abs=0.02)
    assert "torch.compile(decode)" in summary_markdown(res)


def test_no_reference_skips_the_paper_solver_and_says_so(tiny_model):
    """--no-reference: no paper-solver run at all (its solve is never called), the speedup goal is reported as
    not measured, and the other figures are still there."""
    from app.bench import speed

    calls = []
    real = speed.traced_solve

    def spy(detector, *a, **k):
        calls.append(detector.solver.method)
        return real(detector, *a, **k)

    speed.traced_solve = spy
    try:
        res = run_speed(str(tiny_model), "cpu", None, n_converge=1, n_volume=4, n_reference=2, batch_size=4, gui=False,
                        rss=False, profile_decoder=False, ablation=False, reference=False,
                        log=lambda m: None)  # fmt: skip
    finally:
        speed.traced_solve = real
    assert calls == []  # neither solver was traced against the reference
    assert "reference" not in res and "before_after" not in res and "speedup_vs_reference" not in res
    assert res["reference_skipped"] == speed.SKIPPED
    md = summary_markdown(res)
    assert "| speedup_vs_reference | n/a |" in md and "not run (--no-reference)" in md
    assert res["solver_step_over_decoder"] > 0 and res["volume_s_per_slice"] > 0


def test_speed_of_an_ensemble_is_what_a_user_waits_for(tmp_path, tiny_model):
    """bench speed on an ensemble card: a slice, its z window and a volume timed through the ensemble (the members'
    solver figures are theirs, and the report says so); the volume's Dice is the ensemble's detection's."""
    import shutil

    from viewer_study import write_ensemble

    from app.bench import speed
    from app.core.ensemble import load_ensemble
    from app.core.metrics import evaluate

    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_model.with_suffix(suffix), (tiny_model.parent / "copy").with_suffix(suffix))
    card = write_ensemble(tiny_model.parent / "pair.json", [(tiny_model, 0.3), (tiny_model.parent / "copy", 0.1)],
                          eps=0.5, tau=0.3, tau_base=0.4, post={"z_mm": 6.0})  # fmt: skip
    res = run_speed(str(card), "cpu", None, n_converge=2, n_volume=8, batch_size=4, gui=False, rss=False,
                    log=lambda m: None)  # fmt: skip
    assert res["model_family"] == "ensemble" and res["members"] == [str(tiny_model), str(tiny_model.parent / "copy")]
    assert res["eps"] == 1.0 and res["tau"] == 0.3  # the ensemble card's choice
    assert res["slice_window_slices"] == 3 and res["slice_window_s"] > 0  # 6 mm at 2 mm
    assert res["slice_window_base_s"] > 0
    assert res["slice_converge_s"] > 0 and res["volume_s_per_slice"] > 0
    assert "flops_fraction" not in res and res["reference_skipped"] == speed.ENSEMBLE_NOTE
    det, _ = load_ensemble(card)
    images, masks, _ = speed.load_slices(None, 8, S)
    out = det.run(images, 1.0)
    assert res["volume_dice"] == pytest.approx(evaluate(list(out.d), list(masks.astype(bool)), 0.3).dice_mean)
    text = summary_markdown(res)
    assert "| volume_s_per_slice |" in text and speed.ENSEMBLE_NOTE in text and "One solver step" not in text


def test_quality_runs_an_ensemble_card_as_detect_runs_it(tmp_path, tiny_model):
    """bench quality on an ensemble card: per-image tau chosen here on validation at eps factor 1 (its card has
    whole-volume choices only), the test scores those of the ensemble's own maps at that tau, whole volumes at the
    card's choice (--choice card) and paired with the base models' ensemble."""
    import shutil

    from viewer_study import write_ensemble

    from app.core.ensemble import load_ensemble
    from app.core.metrics import evaluate
    from app.data.splits import save_volumes

    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_model.with_suffix(suffix), (tiny_model.parent / "copy").with_suffix(suffix))
    card = write_ensemble(tiny_model.parent / "pair.json", [(tiny_model, 0.3), (tiny_model.parent / "copy", 0.1)],
                          eps=0.5, tau=0.3, tau_base=0.4, post={"erode_px": 1})  # fmt: skip
    data = make_bench(tmp_path / "bench")
    for split, seed in (("val", 3), ("test", 4)):
        imgs, masks = phantom_slices(12, S, seed=seed)
        m = masks.reshape(4, 3, S, S).astype(bool)
        names = [[f"{split}{r}z{z}" for z in range(3)] for r in range(4)]
        save_volumes(data, split, imgs.reshape(4, 3, *imgs.shape[1:]), m, m.astype(np.uint8), names,
                     {"seeds": [0, 1, 2, 3], "z": [0, 1, 2]})  # fmt: skip
    assert quality(data, card, tmp_path / "out", "--choice", "card") == 0
    row = json.loads((tmp_path / "out" / "quality.json").read_text())["models"][0]
    assert row["family"] == "ensemble" and row["model"] == "pair" and len(row["members"]) == 2
    assert row["eps_grid"] == [0.0, 1.0] and row["choice"]["eps"] == 1.0
    assert row["choice"]["source"].startswith("chosen on validation here")
    assert row["volume_choice"]["tau"] == 0.3 and row["volume_choice"]["tau_base"] == 0.4  # the card's
    # the + MG and base test scores are those of the ensemble's own maps at the chosen taus (max 5 steps, as run)
    det, _ = load_ensemble(card)
    test = load_split(data, "test")
    masks = list(np.asarray(test.masks, bool))
    for key, factor, tau in (("mg", 1.0, row["choice"]["tau"]), ("base", 0.0, row["choice"]["base_tau"])):
        out = det.run(np.asarray(test.images), factor, max_steps=5)
        want = evaluate(list(out.d), masks, tau, det.post.min_component_px)
        assert row[key]["dice_mean"] == pytest.approx(want.dice_mean, abs=1e-6) and want.dice_mean > 0.05
    v = row["volumes"]["test"]
    assert v["paired"]["n"] == 4 and len(v["mg"]["volume_dice"]) == 4
    md = (tmp_path / "out" / "quality.md").read_text()
    assert "| pair + MG |" in md and "the same for base and +MG, each model's card: " in md
