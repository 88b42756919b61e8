import json

import pytest
import torch

from app.errors import CheckpointError
from app.nets import ModelConfig, create_model
from app.nets.checkpoint import load_checkpoint, read_card, save_checkpoint
from app.nets.zoo import list_models, resolve_model


def test_round_trip_gives_identical_outputs(tmp_path, tiny_ae):
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    stem = save_checkpoint(tiny_ae, tmp_path / "m", {"epochs": 2, "chosen": {"eps": 0.1, "tau": 0.2}})
    model, card = load_checkpoint(stem.with_suffix(".safetensors"))
    assert card["family"] == "ae-l1" and card["config"]["latent_dim"] == 8
    assert card["training"]["epochs"] == 2 and card["card_version"] == 2  # a flat v1 field, migrated
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert torch.equal(model.pseudo_normal(x), tiny_ae.pseudo_normal(x))
    assert torch.equal(model.decode(model.encode(x)), model.pseudo_normal(x))
    assert list_models(tmp_path) == ["m"]
    assert resolve_model("m", tmp_path) == tmp_path / "m"
    assert resolve_model(str(tmp_path / "m.json")) == tmp_path / "m"
    assert not list(tmp_path.glob("*.part"))  # atomic writes leave no temporaries


def test_weights_are_safetensors_not_pickle(tmp_path, tiny_ae):
    stem = save_checkpoint(tiny_ae, tmp_path / "m")
    head = stem.with_suffix(".safetensors").read_bytes()[:16]
    assert not head.startswith(b"\x80")  # pickle protocol marker
    n = int.from_bytes(head[:8], "little")
    header = json.loads(stem.with_suffix(".safetensors").read_bytes()[8 : 8 + n])
    assert header["__metadata__"]["family"] == "ae-l1"


def test_wrong_shape_and_family_are_clear_errors(tmp_path, tiny_ae):
    stem = save_checkpoint(tiny_ae, tmp_path / "m")
    card = read_card(stem)
    card["config"]["latent_dim"] = 9  # a card that does not fit the weights
    stem.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(stem)
    with pytest.raises(CheckpointError, match="not 'vae'"):
        save_checkpoint(tiny_ae, tmp_path / "n")
        load_checkpoint(tmp_path / "n", expect_family="vae")
    card["family"] = card["config"]["family"] = "no-such-family"
    stem.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="unknown model family"):
        load_checkpoint(stem)


@pytest.mark.parametrize("damage", ["missing_weights", "garbage_weights", "bad_json", "no_card", "pickle"])
def test_corrupt_checkpoints_are_clear_errors(tmp_path, tiny_ae, damage):
    stem = save_checkpoint(tiny_ae, tmp_path / "m")
    w, j = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if damage == "missing_weights":
        w.unlink()
    elif damage == "garbage_weights":
        w.write_bytes(w.read_bytes()[:100])
    elif damage == "bad_json":
        j.write_text("{not json")
    elif damage == "no_card":
        j.unlink()
    elif damage == "pickle":
        torch.save(tiny_ae.state_dict(), w)  # a pickled checkpoint renamed: must be refused, never unpickled
    with pytest.raises(CheckpointError):
        load_checkpoint(stem)


def test_unknown_model_name_lists_the_zoo(tmp_path, tiny_ae):
    save_checkpoint(tiny_ae, tmp_path / "alpha")
    with pytest.raises(CheckpointError, match="alpha"):
        resolve_model("beta", tmp_path)


def test_config_validation():
    with pytest.raises(CheckpointError):
        ModelConfig.from_dict({"family": "ae-l1", "channels": 2})
    with pytest.raises(CheckpointError):
        ModelConfig.from_dict({"image_size": 128})
    m = create_model(ModelConfig("ae-l1", image_size=32, latent_dim=4, width=4))
    with pytest.raises(CheckpointError, match="expects images"):
        m.check_input(torch.zeros(1, 3, 32, 32))


def test_list_ensembles_finds_ensemble_cards_only(tmp_path):
    import json

    from app.nets.zoo import list_ensembles

    (tmp_path / "pair.json").write_text(json.dumps({"family": "ensemble", "members": []}))
    (tmp_path / "single.json").write_text(json.dumps({"family": "dae"}))
    (tmp_path / "broken.json").write_text("{not json")
    assert list_ensembles(tmp_path) == ["pair"]
    assert list_ensembles(tmp_path / "missing") == []


def test_an_unknown_model_name_lists_the_ensembles_too(tmp_path):
    """The error for an unknown name lists every name the zoo answers to, the ensemble cards (the default model is
    one) as well as the models with weights."""
    import json

    import torch

    from app.nets import ModelConfig, create_model
    from app.nets.checkpoint import save_checkpoint
    from app.nets.zoo import zoo_names

    torch.manual_seed(0)
    save_checkpoint(create_model(ModelConfig("ae-l1", image_size=16, latent_dim=4, width=4)), tmp_path / "m", {})
    (tmp_path / "m+m.json").write_text(json.dumps({"family": "ensemble", "members": []}))
    assert zoo_names(tmp_path) == ["m", "m+m"]
    with pytest.raises(CheckpointError, match=r"models in .*: m, m\+m\)"):
        resolve_model("nosuch", tmp_path)
