"""Calibration on validation writes the eps range and the Dice choice into the card, and the numbers in the card
are the ones the shared Detector reproduces."""

import numpy as np
import pytest

from app.cli import main
from app.core.detector import Detector, PostProcessing
from app.core.metrics import dice
from app.data.splits import load_split
from app.nets.card import card_channels_last, card_postprocess, card_solver, describe_solver
from app.nets.checkpoint import load_checkpoint, read_card


def test_calibrate_fills_card_with_reproducible_choice(dataset, tmp_path):
    out = tmp_path / "m"
    args = ["train", "ae-l1", "--data", str(dataset), "--out", str(out), "--epochs", "2", "--width", "4"]
    assert main([*args, "--latent-dim", "8", "--batch-size", "8", "--quiet"]) == 0
    before = read_card(out)
    assert main(["calibrate", str(out), "--data", str(dataset), "--subset", "3", "--max-steps", "15"]) == 0
    card = read_card(out)
    assert card["history"] == before["history"]  # training record untouched
    rng, ch = card["eps_range"], card["chosen"]
    assert rng["eps_max"] > 0 and rng["grid"][0] == 0.0 and rng["eps_max"] in rng["grid"]
    assert rng["grid"][-1] >= rng["eps_max"]  # extended while the best eps was at the top
    assert {"eps", "tau", "tau_base", "val_dice", "val_dice_base", "peak_inside_grid", "binding_fraction"} <= set(ch)
    assert 0 <= ch["binding_fraction"] <= 1 and 0 <= ch["step_cap_fraction"] <= 1
    post = card_postprocess(card)
    assert card["calibration"]["postprocess_choice"]["on"] == "slices"  # this data set has no validation volumes
    assert set(card["calibration"]["postprocess_choice"]["val_dice_per_variant"]) == {
        f"{m}/{e}/{c}" for m in (0, 3, 5, 7) for e in (0, 2, 4, 6, 8) for c in (0, 10, 30, 60, 100)
    }
    assert ch["eps"] in rng["grid"][1:] and 0 <= ch["tau"] <= 1 and 0 <= ch["tau_base"] <= 1
    assert card["calibration"]["n_images"] == 3 and card["calibration"]["split"] == "val"
    # the layout: the faster of the two, timed on a validation batch, and what detect and the viewer apply
    settings = card["calibration"]["settings"]
    timing = settings["layout_timing"]["seconds_per_batch"]
    assert set(timing) == {"contiguous", "channels_last"} and min(timing.values()) > 0
    assert settings["channels_last"] == (timing["channels_last"] < timing["contiguous"])
    assert card_channels_last(card) == settings["channels_last"]
    # the base model's validation Dice is what the shared pipeline gives at tau_base
    model, _ = load_checkpoint(out)
    val = load_split(dataset, "val")
    idx = np.flatnonzero(val.masks.reshape(len(val.masks), -1).any(1))
    out = Detector(model, "cpu", post=PostProcessing(**post)).run(val.images[idx], 0.0, base_only=True)
    expect = np.mean([dice(m, g) for m, g in zip(out.mask(ch["tau_base"]), val.masks[idx], strict=True)])
    assert ch["val_dice_base"] == pytest.approx(expect, abs=1e-5)
    assert ch["val_dice"] == pytest.approx(max(card["calibration"]["best_val_dice_per_eps"][str(e)]
                                                   for e in rng["grid"][1:]), abs=1e-6)  # fmt: skip


def test_calibrate_layout_can_be_fixed(dataset, tmp_path):
    out = tmp_path / "m"
    args = ["train", "ae-l1", "--data", str(dataset), "--out", str(out), "--epochs", "1", "--width", "4"]
    assert main([*args, "--latent-dim", "8", "--batch-size", "8", "--quiet"]) == 0
    for layout, expect in (("contiguous", False), ("channels_last", True)):
        argv = ["calibrate", str(out), "--data", str(dataset), "--subset", "2", "--max-steps", "5", "--no-volumes"]
        assert main([*argv, "--extend", "0", "--no-postprocess", "--layout", layout]) == 0
        card = read_card(out)
        assert card_channels_last(card) is expect and card["calibration"]["settings"]["layout_timing"] is None
    assert card_solver(card).loss_cap is None  # the paper's plain L1 unless asked


def test_calibrate_records_a_capped_objective_and_detect_applies_it(dataset, tmp_path, capsys):
    out = tmp_path / "m"
    args = ["train", "ae-l1", "--data", str(dataset), "--out", str(out), "--epochs", "1", "--width", "4"]
    assert main([*args, "--latent-dim", "8", "--batch-size", "8", "--quiet"]) == 0
    argv = ["calibrate", str(out), "--data", str(dataset), "--subset", "2", "--max-steps", "3", "--no-volumes"]
    assert main([*argv, "--extend", "0", "--no-postprocess", "--loss-cap", "0.2"]) == 0
    card = read_card(out)
    assert card["calibration"]["settings"]["solver_options"]["loss_cap"] == 0.2
    model, _ = load_checkpoint(out)
    assert Detector.from_card(model, card).solver.loss_cap == 0.2
    assert "loss capped at 0.2" in describe_solver(card_solver(card))
    capsys.readouterr()
    assert main([*argv, "--loss-cap", "0"]) == 2
    assert "loss_cap" in capsys.readouterr().err
    assert read_card(out) == card  # a refused option changes nothing


def test_calibrate_records_how_the_solver_fares_at_the_volume_choice(dataset, tmp_path):
    """The whole-volume choice is what detect applies: the card says, for its eps, how often the constraint binds,
    how often the step budget runs out and the mean steps, over the volumes' slices that are solved."""
    from app.data.splits import save_volumes

    val = load_split(dataset, "val")
    kinds = val.masks.astype(np.uint8)  # kind 1 (bright) wherever there is lesion
    save_volumes(dataset, "val", val.images.reshape(2, 3, 1, 32, 32), val.masks.reshape(2, 3, 32, 32),
                 kinds.reshape(2, 3, 32, 32), [["a0", "a1", "a2"], ["b0", "b1", "b2"]],
                 {"seeds": [0, 1], "z": [0, 1, 2]})  # fmt: skip
    out = tmp_path / "m"
    args = ["train", "ae-l1", "--data", str(dataset), "--out", str(out), "--epochs", "1", "--width", "4"]
    assert main([*args, "--latent-dim", "8", "--batch-size", "8", "--quiet"]) == 0
    argv = ["calibrate", str(out), "--data", str(dataset), "--subset", "2", "--extend", "0", "--no-postprocess"]
    assert main([*argv, "--max-steps", "2"]) == 0
    cv = read_card(out)["chosen_volume"]
    assert cv["eps"] > 0 and cv["n_volumes"] == 2
    # a 2-step budget: every solved slice uses it up
    assert cv["step_cap_fraction"] == 1.0 and cv["mean_steps"] == 2.0 and 0 <= cv["binding_fraction"] <= 1


def test_calibrate_chooses_the_postprocessing_on_the_validation_volumes(dataset, tmp_path):
    """With validation volumes, the post-processing is the one with the best whole-volume Dice of the base model
    (what detect applies), and the volume choice's base Dice is that variant's entry in the card's table."""
    from app.data.splits import save_volumes

    val = load_split(dataset, "val")
    images, masks = val.images.reshape(2, 3, 1, 32, 32), val.masks.reshape(2, 3, 32, 32)
    save_volumes(dataset, "val", images, masks, masks.astype(np.uint8), [["a0", "a1", "a2"], ["b0", "b1", "b2"]],
                 {"seeds": [0, 1], "z": [0, 1, 2]})  # fmt: skip
    out = tmp_path / "m"
    args = ["train", "ae-l1", "--data", str(dataset), "--out", str(out), "--epochs", "1", "--width", "4"]
    assert main([*args, "--latent-dim", "8", "--batch-size", "8", "--quiet"]) == 0
    argv = ["calibrate", str(out), "--data", str(dataset), "--subset", "2", "--extend", "0", "--max-steps", "2"]
    assert main(argv) == 0
    card = read_card(out)
    choice = card["calibration"]["postprocess_choice"]
    assert choice["on"] == "volumes" and "whole-volume" in choice["rule"]
    table = choice["val_dice_per_variant"]
    post = card_postprocess(card)
    key = f"{post['median_size']}/{post['erode_px']}/{post['min_component_px']}"
    assert table[key] == max(table.values())
    assert card["chosen_volume"]["val_volume_dice_base"] == pytest.approx(table[key], abs=1e-6)
    # and it is the base model's mean volume Dice through the shared Detector at the card's base tau
    model, _ = load_checkpoint(out)
    det = Detector(model, "cpu", post=PostProcessing(**post))
    tau = card["chosen_volume"]["tau_base"]
    got = [dice(det.run(v, 0.0, base_only=True).mask(tau), m) for v, m in zip(images, masks, strict=True)]
    assert float(np.mean(got)) == pytest.approx(table[key], abs=1e-5)
    # the old rule stays available
    assert main([*argv, "--post-on", "slices"]) == 0
    assert read_card(out)["calibration"]["postprocess_choice"]["on"] == "slices"


def test_calibrate_z_only_writes_the_window_and_its_taus(dataset, tmp_path, capsys):
    """``calibrate --z-only`` on a card with a whole-volume choice: the z-window table for every window asked
    for, the window with the best +MG volume Dice in ``postprocess.z_mm`` (absent for 0), the taus of that window
    in ``chosen_volume``; the card's eps is kept. A bad --z-grid is a one-line error (exit 2), the card untouched."""
    from app.data.splits import save_volumes

    val = load_split(dataset, "val")
    images, masks = val.images.reshape(2, 3, 1, 32, 32), val.masks.reshape(2, 3, 32, 32)
    save_volumes(dataset, "val", images, masks, masks.astype(np.uint8), [["a0", "a1", "a2"], ["b0", "b1", "b2"]],
                 {"seeds": [0, 1], "z": [0, 1, 2], "slice_mm": 2.0})  # fmt: skip
    out = tmp_path / "m"
    args = ["train", "ae-l1", "--data", str(dataset), "--out", str(out), "--epochs", "1", "--width", "4"]
    assert main([*args, "--latent-dim", "8", "--batch-size", "8", "--quiet"]) == 0
    argv = ["calibrate", str(out), "--data", str(dataset), "--subset", "2", "--extend", "0", "--max-steps", "2"]
    assert main([*argv, "--z-grid", "0"]) == 0
    before = read_card(out)
    assert "z_choice" not in before["chosen_volume"] and before["postprocess"].get("z_mm", 0.0) == 0.0
    capsys.readouterr()
    assert main(["calibrate", str(out), "--data", str(dataset), "--z-only", "--z-grid", "0,six"]) == 2
    assert "--z-grid" in capsys.readouterr().err and read_card(out) == before
    assert main(["calibrate", str(out), "--data", str(dataset), "--z-only", "--z-grid", "0,6"]) == 0
    card = read_card(out)
    zc = card["chosen_volume"]["z_choice"]
    assert set(zc["per_window"]) == {"0", "6"} and zc["eps"] == pytest.approx(before["chosen_volume"]["eps"])
    best = max(zc["per_window"], key=lambda k: (zc["per_window"][k][0], -float(k)))
    assert zc["z_mm"] == float(best) and card["postprocess"].get("z_mm", 0.0) == float(best)
    assert card["chosen_volume"]["tau"] == zc["per_window"][best][1]
    assert card["chosen_volume"]["tau_base"] == zc["per_window"][best][3]
    assert card["chosen_volume"]["eps"] == before["chosen_volume"]["eps"]
    # with 0 the table's first row is the card as it was
    assert zc["per_window"]["0"][0] == pytest.approx(before["chosen_volume"]["val_volume_dice"], abs=1e-6)


def test_calibrate_eps_area_only_records_the_median_foreground_area(dataset, tmp_path, capsys):
    """``calibrate --eps-area-only``: the reference area is the median foreground area of the validation volumes'
    slices (those with foreground), the card's choices are untouched and the card's Detector scales by it; a data
    set without validation volumes is a one-line error (exit 2), the card untouched."""
    from app.core.detector import foreground_area, has_foreground
    from app.data.splits import save_volumes

    out = tmp_path / "m"
    args = ["train", "ae-l1", "--data", str(dataset), "--out", str(out), "--epochs", "1", "--width", "4"]
    assert main([*args, "--latent-dim", "8", "--batch-size", "8", "--quiet"]) == 0
    before = read_card(out)
    capsys.readouterr()
    assert main(["calibrate", str(out), "--data", str(dataset), "--eps-area-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "volumes" in err[0] and read_card(out) == before
    val = load_split(dataset, "val")
    images, masks = val.images.reshape(2, 3, 1, 32, 32).copy(), val.masks.reshape(2, 3, 32, 32)
    images[1, 2] = 0.0  # an empty slice does not count
    save_volumes(dataset, "val", images, masks, masks.astype(np.uint8), [["a0", "a1", "a2"], ["b0", "b1", "b2"]],
                 {"seeds": [0, 1], "z": [0, 1, 2], "slice_mm": 2.0})  # fmt: skip
    assert main(["calibrate", str(out), "--data", str(dataset), "--eps-area-only"]) == 0
    card = read_card(out)
    flat = images.reshape(-1, 1, 32, 32)
    areas = foreground_area(flat[has_foreground(flat)])
    assert len(areas) == 5 and card["eps_scaling"]["reference_area_px"] == float(np.median(areas))
    assert card["eps_scaling"]["slices"] == 5
    assert {k: v for k, v in card.items() if k != "eps_scaling"} == before
    model, card = load_checkpoint(out)
    assert Detector.from_card(model, card).eps_reference_area == float(np.median(areas))
