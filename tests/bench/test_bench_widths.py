"""``bench widths``: the cost of a family by width beside trained checkpoints' validation figures."""

import json

import pytest
import torch

from app.bench.speed import phantom_slices
from app.bench.widths import VOLUME_GOAL_S_PER_SLICE, run_widths, trained_quality
from app.cli import main
from app.data.splits import save_split
from app.nets import ModelConfig, create_model
from app.nets.checkpoint import save_checkpoint

S = 32
SETTINGS = {"solver": "fast", "max_steps": 5, "channels_last": False,
            "solver_options": {"method": "spg", "precision": "bf16", "max_steps": 100, "patience": 10}}  # fmt: skip


@pytest.fixture
def reference(tmp_path):
    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=S, latent_dim=8, width=4)).freeze()
    history = [{"epoch": e, "train": {"loss": 0.1}, "val_loss": 0.1 / e, "val_ap": ap}
               for e, ap in ((1, 0.05), (2, 0.12), (3, 0.07))]  # fmt: skip
    card = {"chosen": {"eps": 0.5, "tau": 0.2}, "calibration": {"settings": SETTINGS}, "history": history,
            "training": {"epochs": 3.0, "training_time_s": 30.0, "selection": {"metric": "val_ap", "best_epoch": 2.0}},
            "chosen_volume": {"eps": 0.5, "tau": 0.2, "val_volume_dice": 0.3, "val_volume_dice_base": 0.25,
                              "n_volumes": 16}}  # fmt: skip
    return save_checkpoint(m, tmp_path / "models" / "ref", card), m


def test_costs_by_width_known_answers(reference):
    stem, model = reference
    res = run_widths(str(stem), [2, 4, 8], None, [str(stem)], threads=1, slices=4, batch_size=4, log=lambda m: None)
    rows = {r["width"]: r for r in res["speed"]}
    # the reference width rebuilds exactly the reference network; wider ones have more parameters
    assert rows[4]["parameters"] == sum(p.numel() for p in model.parameters())
    assert rows[2]["parameters"] < rows[4]["parameters"] < rows[8]["parameters"]
    assert {r["latent_size"] for r in res["speed"]} == {8}  # ae-l1's z is its bottleneck vector at any width
    for r in res["speed"]:
        assert r["train_step_s"] > 0 and r["detect_s_per_slice"] > 0
        assert r["meets_volume_goal"] == (r["detect_s_per_slice"] <= VOLUME_GOAL_S_PER_SLICE)
        assert r["decodes_with_grad_per_slice"] >= 5  # the card's 5-step budget is what is timed
        assert r["decodes_with_grad_per_slice"] < 5 * 4  # ... and not the solver's default 100 (or 1000)
    # the trained checkpoint's row is its kept epoch (2), not its last (3)
    (q,) = res["quality"]
    assert (q["width"], q["kept_epoch"], q["val_ap"], q["val_loss"]) == (4, 2.0, 0.12, 0.05)
    assert q["train_s_per_epoch"] == 10.0 and (q["volume_dice_base"], q["volume_dice_mg"]) == (0.25, 0.3)


def test_cli_writes_the_table_and_rejects_bad_widths(tmp_path, reference, capsys):
    stem, _ = reference
    data = tmp_path / "bench"
    imgs, masks = phantom_slices(6, S, seed=1)
    save_split(data, "test", imgs, masks, [f"t{i}" for i in range(6)])
    save_split(data, "train", imgs, None, [f"r{i}" for i in range(6)])
    out = tmp_path / "out"
    args = ["bench", "widths", "--model", str(stem), "--widths", "2,4", "--data", str(data), "--slices", "4",
            "--threads", "1", "--out", str(out)]  # fmt: skip
    assert main([*args, "--trained", str(stem)]) == 0
    res = json.loads((out / "widths.json").read_text())
    md = (out / "widths.md").read_text()
    assert [r["width"] for r in res["speed"]] == [2, 4] and "test split (4 slices)" in res["slices"]
    assert "| 2 |" in md and "| 4 |" in md and "12.0 %" in md and "25.0 / 30.0 % (16 volumes)" in md
    assert "--trained" in res["command"] and str(stem) in res["command"]
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main([*args[:-1], str(bad), "--widths", "8,x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--widths" in err[0] and not bad.exists()


def test_trained_quality_without_selection_takes_the_last_epoch(reference, tmp_path):
    _, model = reference
    stem = save_checkpoint(model, tmp_path / "plain", {"history": [{"epoch": 1, "val_ap": 0.01, "val_loss": 0.2},
                                                                   {"epoch": 2, "val_ap": 0.02, "val_loss": 0.1}],
                                                       "training": {"epochs": 2.0}})  # fmt: skip
    q = trained_quality(stem)
    assert (q["kept_epoch"], q["val_ap"], q["train_s_per_epoch"], q["volume_dice_mg"]) == (2, 0.02, None, None)
