"""The training command: card contents, resume = uninterrupted run, optimizer state without pickle, errors."""

import numpy as np
import pytest
import torch

from app.cli import main
from app.errors import CheckpointError
from app.nets import ModelConfig, create_model
from app.nets.checkpoint import load_checkpoint, read_card
from app.train.loop import state_path, validation_loss
from app.train.state import load_train_state, save_train_state


def train_args(family, data, out, epochs, *more):
    return ["train", family, "--data", str(data), "--out", str(out), "--epochs", str(epochs), "--width", "4",
            "--latent-dim", "8", "--batch-size", "8", "--quiet", *more]  # fmt: skip


def test_card_records_what_the_brief_asks(dataset, tmp_path, capsys):
    out = tmp_path / "models" / "m"
    assert main(train_args("ce-ae", dataset, out, 2)) == 0
    card = read_card(out)
    tr = card["training"]
    assert card["family"] == "ce-ae" and card["status"] == "trained"
    assert card["config"]["image_size"] == 32 and card["config"]["width"] == 4
    assert tr["data_dir"] == str(dataset) and tr["data_meta"]["what"] == "test disc phantoms"
    assert tr["epochs"] == 2 and tr["n_train_slices"] == 16 and "--epochs 2" in tr["command"]
    assert tr["training_time_s"] > 0 and tr["date"].endswith("Z")
    assert len(card["history"]) == 2 and card["final_val_loss"] == card["history"][-1]["val_loss"]
    assert card["final_train_loss"]["loss"] > 0
    assert "outside the lesion masks" in card["val_loss_definition"]
    model, _ = load_checkpoint(out)
    assert model.family == "ce-ae"
    assert state_path(out).is_file()


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(dataset, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(train_args("vae", dataset, a, 2)) == 0
    assert main(train_args("vae", dataset, b, 1)) == 0
    assert main(train_args("vae", dataset, b, 2, "--resume")) == 0
    ma, _ = load_checkpoint(a)
    mb, card = load_checkpoint(b)
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    assert [h["epoch"] for h in card["history"]] == [1, 2]
    assert len(card["training"]["commands"]) == 2 and "--resume" in card["training"]["commands"][1]


def test_resume_after_the_best_epoch_was_shipped_goes_on_from_the_last_epoch(dataset, tmp_path):
    """With a patience the checkpoint holds the best epoch's weights, not the last's. A run resumed from there must
    go on from the last epoch (its history as if it never stopped) and still ship the best epoch's weights if no
    later epoch beats them; before, it trained on from the best epoch's weights and shipped the last epoch's."""
    a, b = tmp_path / "a", tmp_path / "b"
    more = ("--patience", "9", "--lr", "0.01", "--select", "val_loss")  # at this lr epoch 2 is the best of 4
    assert main(train_args("ae-l1", dataset, b, 3, *more)) == 0
    assert read_card(b)["training"]["selection"]["best_epoch"] == 2  # so b's checkpoint is not its last epoch
    assert main(train_args("ae-l1", dataset, b, 4, *more, "--resume")) == 0
    assert main(train_args("ae-l1", dataset, a, 4, *more)) == 0
    (ma, card_a), (mb, card_b) = load_checkpoint(a), load_checkpoint(b)
    assert [h["val_loss"] for h in card_b["history"]] == [h["val_loss"] for h in card_a["history"]]
    assert card_b["training"]["selection"]["best_epoch"] == card_a["training"]["selection"]["best_epoch"] == 2
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka


def test_adversarial_family_trains_and_vae_grad_fits_its_scale(dataset, tmp_path):
    assert main(train_args("ddgan", dataset, tmp_path / "d", 1)) == 0
    card = read_card(tmp_path / "d")
    assert {"rec", "adv", "disc"} <= set(card["final_train_loss"])
    assert main(train_args("vae-grad", dataset, tmp_path / "g", 1)) == 0
    assert read_card(tmp_path / "g")["config"]["extra"]["grad_scale"] > 0


def test_time_limit_alone_trains_until_the_limit(dataset, tmp_path):
    # before: the default 10 epochs ended the run first (16 tiny slices: 10 epochs take well under a second)
    args = ["train", "ae-l1", "--data", str(dataset), "--out", str(tmp_path / "t"), "--width", "4",
            "--latent-dim", "8", "--batch-size", "8", "--quiet", "--time-limit", "1.5"]  # fmt: skip
    assert main(args) == 0
    tr = read_card(tmp_path / "t")["training"]
    assert tr["stopped_by_time_limit"] and tr["epochs_requested"] > 10**5  # the limit, not an epoch count, ended it
    assert tr["training_time_s"] >= 1.5
    assert "--epochs" not in tr["command"] and "--time-limit 1.5" in tr["command"]


def test_default_epochs_without_a_time_limit():
    from app.cli.train import DEFAULT_EPOCHS, resolve_epochs

    assert resolve_epochs(None, None) == DEFAULT_EPOCHS == 10
    assert resolve_epochs(3, None) == resolve_epochs(3, 60.0) == 3  # an explicit --epochs still bounds a time limit
    assert resolve_epochs(None, 60.0) > 10**5


def test_time_limit_stops_early(dataset, tmp_path):
    assert main(train_args("ae-l1", dataset, tmp_path / "t", 50, "--time-limit", "0")) == 0
    tr = read_card(tmp_path / "t")["training"]
    assert tr["stopped_by_time_limit"] and tr["epochs"] == 0.5  # one of the two batches of the first epoch


def test_optimizer_state_round_trip_is_exact_and_not_pickle(tmp_path):
    model = create_model(ModelConfig("ae-l1", image_size=32, latent_dim=8, width=4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        model.training_loss(torch.rand(2, 1, 32, 32)).backward()
        opt.step()
    save_train_state(tmp_path / "s.safetensors", {"model": opt}, {"epochs_done": 3})
    assert not (tmp_path / "s.safetensors").read_bytes().startswith(b"\x80")
    opt2 = torch.optim.Adam(model.parameters(), lr=5.0)
    info = load_train_state(tmp_path / "s.safetensors", {"model": opt2})
    assert info == {"epochs_done": 3}
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 1e-3
    for pid, st in s1["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][pid][k]))
    with pytest.raises(CheckpointError, match="no optimizer"):
        load_train_state(tmp_path / "s.safetensors", {"other": opt2})


def test_validation_loss_ignores_lesions_and_background():
    model = create_model(ModelConfig("ae-l1", image_size=32, latent_dim=8, width=4)).freeze()
    x = np.full((2, 1, 32, 32), 0.5, np.float32)
    x[:, :, :4] = 0.0  # background
    with torch.no_grad():
        s = model.pseudo_normal(torch.from_numpy(x)).numpy()
    masks = np.zeros((2, 32, 32), bool)
    masks[:, 10:20, 10:20] = True
    keep = (x[:, 0] > 0.01) & ~masks
    expect = np.abs(x - s)[:, 0][keep].mean()
    assert validation_loss(model, x, masks, "cpu") == pytest.approx(expect, rel=1e-5)


def test_user_errors_exit_2_with_one_line(dataset, tmp_path, capsys):
    assert main(train_args("ae-l1", tmp_path / "nope", tmp_path / "x", 1)) == 2
    assert main(train_args("no-such", dataset, tmp_path / "x", 1)) == 2
    assert main(train_args("ae-l1", dataset, tmp_path / "fresh", 1, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("matchgen train: error:") for line in err)
    assert "unknown model family" in err[1] and "nothing to resume" in err[2]


def test_patience_stops_and_ships_the_best_epoch_by_validation(dataset, tmp_path):
    """With --patience the run stops once the selection metric has not improved for that many epochs, and the
    shipped weights are the best epoch's: recomputing the metric on them gives the card's best value; the
    temporary best-epoch files are gone. Without a patience the last epoch ships (the other tests)."""
    from app.train.loop import best_stem, load_data, validation_ap

    out = tmp_path / "p"
    assert main(train_args("ae-l1", dataset, out, 8, "--patience", "1", "--select", "val_loss")) == 0
    card = read_card(out)
    sel = card["training"]["selection"]
    hist = card["history"]
    losses = [h["val_loss"] for h in hist]
    best = min(losses)
    assert sel["metric"] == "val_loss" and sel["best_value"] == pytest.approx(best, abs=1e-6)
    assert hist[losses.index(best)]["epoch"] == sel["best_epoch"]
    if sel["stopped_early"]:
        assert len(hist) < 8 and losses[-1] >= best
    model, _ = load_checkpoint(out)
    data = load_data(str(dataset), None, 256)
    assert validation_loss(model, data.val, data.val_masks, "cpu") == pytest.approx(best, abs=1e-5)
    assert card["final_val_loss"] == pytest.approx(best, abs=1e-6)
    assert all(h["val_ap"] is not None and 0 <= h["val_ap"] <= 1 for h in hist)
    assert validation_ap(model, data.val, data.val_masks, "cpu") is not None
    assert not best_stem(out).with_suffix(".safetensors").exists()


def test_augment_slices_varies_the_foreground_only_and_is_seeded():
    from app.data.augment import augment_slices

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-1:1:48j, -1:1:48j]
    disc = (xx**2 + yy**2 < 0.6).astype(np.float32)
    x = torch.from_numpy((disc * (0.3 + 0.5 * rng.random((6, 1, 48, 48)))).astype(np.float32))
    a = augment_slices(x, torch.Generator().manual_seed(3))
    b = augment_slices(x, torch.Generator().manual_seed(3))
    c = augment_slices(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    bg = torch.from_numpy(disc == 0).expand_as(x)
    assert torch.all(a[bg] == 0) and a.min() >= 0 and a.max() <= 1
    assert (a - x).abs()[~bg].mean() > 0.01  # the brain really changes
    assert torch.equal(augment_slices(x, torch.Generator().manual_seed(3), 0.0), x)


def _discs(n=6, size=48, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    disc = (xx**2 + (yy / 0.8) ** 2 < 0.4).astype(np.float32)
    return torch.from_numpy((disc * (0.3 + 0.5 * rng.random((n, 1, size, size)))).astype(np.float32))


def test_deform_slices_changes_anatomy_within_its_stated_ranges_and_is_seeded():
    from app.data.augment import deform_slices

    x = _discs()
    a = deform_slices(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, deform_slices(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, deform_slices(x, torch.Generator().manual_seed(4)))
    assert torch.equal(deform_slices(x, torch.Generator().manual_seed(3), 0.0), x)
    # a vanishing strength is the identity (grid_sample at the pixel centres), so the maps are not shifted by a pixel
    assert (deform_slices(x, torch.Generator().manual_seed(3), 1e-6) - x).abs().max() < 1e-3
    assert a.min() >= 0 and a.max() <= 1 and torch.all(a[..., :2, :] == 0) and torch.all(a[..., :, :2] == 0)
    fg0, fg1 = (x > 0.01).sum((1, 2, 3)).double(), (a > 0.01).sum((1, 2, 3)).double()
    ratio = fg1 / fg0
    # scale 0.88-1.12 and a stretch that keeps the area, plus the elastic part: the area within 0.7-1.4x
    assert torch.all((ratio > 0.7) & (ratio < 1.4)), ratio
    assert (ratio - 1).abs().max() > 0.03  # the brain's size really varies
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")

    def centre(m):
        m = (m[:, 0] > 0.01).double()
        return torch.stack([(m * yy).sum((1, 2)) / m.sum((1, 2)), (m * xx).sum((1, 2)) / m.sum((1, 2))], 1)

    shift = (centre(a) - centre(x)).norm(dim=1)
    assert shift.max() < 8  # shift up to 4 px per axis plus the elastic field's mean: well inside 8 px
    # the deformation is not a global affine map only: the local warp moves the edge unevenly
    assert (a - x).abs().mean() > 0.02


def test_shape_augment_is_used_in_training_and_recorded_in_the_card(dataset, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(train_args("ae-l1", dataset, a, 1)) == 0
    assert main(train_args("ae-l1", dataset, b, 1, "--shape-augment", "1")) == 0
    ca, cb = read_card(a), read_card(b)
    assert "deform_slices strength 1" in cb["training"]["augmentation"]
    assert "deform_slices" not in ca["training"]["augmentation"]
    ma, _ = load_checkpoint(a)
    mb, _ = load_checkpoint(b)
    pairs = zip(ma.state_dict().values(), mb.state_dict().values(), strict=True)
    assert any(not torch.equal(va, vb) for va, vb in pairs)
