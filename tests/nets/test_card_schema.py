"""The model-card schema (v2): validated on load with errors that name the field, v1 cards migrated, the shipped
cards in the current schema, and the readers' known answers (the solver a card names, the warning when another
solver applies its tau)."""

import copy
import json
import math
import os

import pytest

from app.errors import CheckpointError, OptionError
from app.nets.card import (
    CARD_VERSION,
    card_domain,
    card_postprocess,
    card_training,
    migrate_card,
    read_card,
    solver_for,
    validate_card,
)
from app.nets.zoo import MODELS_DIR, list_models
from app.solver_options import FAST, PAPER

MINIMAL = {
    "name": "m",
    "family": "ae-l1",
    "config": {"family": "ae-l1", "image_size": 32, "channels": 1, "normalization": "mri-percentile"},
}


def _with(path: str, value, card=None):
    c = copy.deepcopy(card or MINIMAL)
    *head, last = path.split(".")
    d = c
    for k in head:
        d = d.setdefault(k, {})
    if value is KeyError:
        del d[last]
    else:
        d[last] = value
    return c


def test_shipped_cards_are_all_current_and_valid():
    names = list_models(MODELS_DIR)
    assert len(names) >= 7
    for name in names:
        raw = json.loads((MODELS_DIR / f"{name}.json").read_text())
        assert raw["card_version"] == CARD_VERSION, name  # migrated on disk, not only on load
        assert not {"epochs", "train_seconds", "data", "val_loss"} & set(raw), name  # one place for each fact
        card = read_card(MODELS_DIR / name)
        assert card == raw  # validation of a current card changes nothing
        assert card_training(card)["epochs"] == raw["training"]["epochs"] > 0


def test_v1_cards_with_and_without_flat_training_fields_migrate_to_one_shape():
    with_flat = {
        **MINIMAL,
        "card_version": 1,
        "epochs": 1.5,
        "train_seconds": 30.0,
        "data": "/d",
        "val_loss": 0.07,
        "final_val_loss": 0.07,
        "training": {"epochs": 1.5, "training_time_s": 30.0, "data_dir": "/d"},
    }
    without = {
        **MINIMAL,
        "card_version": 1,
        "final_val_loss": 0.07,
        "training": {"epochs": 1.5, "training_time_s": 30.0, "data_dir": "/d"},
    }
    a, b = validate_card(with_flat), validate_card(without)
    assert a == b and a["card_version"] == CARD_VERSION
    assert card_training(a) == {"epochs": 1.5, "train_seconds": 30.0, "data": "/d", "val_loss": 0.07}
    assert card_training(with_flat) == card_training(without)  # a reader of raw v1 cards sees the same facts
    only_flat = validate_card({**MINIMAL, "epochs": 2.0})  # no version, no training block: the flat fact moves in
    assert only_flat["training"] == {"epochs": 2.0} and "epochs" not in only_flat
    assert migrate_card(with_flat)["card_version"] == CARD_VERSION and with_flat["card_version"] == 1  # a copy


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("name", KeyError, "missing field 'name'"),
        ("family", KeyError, "missing field 'family'"),
        ("config", KeyError, "missing field 'config'"),
        ("config.image_size", KeyError, "missing field 'config.image_size'"),
        ("config.normalization", KeyError, "missing field 'config.normalization'"),
        ("config.channels", 2, "field 'config.channels'"),
        ("config.family", "vae", "field 'config.family'"),
        ("chosen.tau", "high", "field 'chosen.tau'"),
        ("chosen.eps", -1.0, "field 'chosen.eps'"),
        ("eps_range.grid", [0, "a"], "field 'eps_range.grid'"),
        ("calibration.settings.solver_options", {"method": "newton"}, "invalid solver"),
        ("calibration.settings.max_steps", 1.5, "field 'calibration.settings.max_steps'"),
        ("postprocess.median_size", -3, "field 'postprocess.median_size'"),
        ("postprocess.dilate_px", 2, "unknown post-processing key"),
        ("postprocess.z_edge", "reflect", "field 'postprocess.z_edge'"),
        ("domain.modality", {"x": 1}, "field 'domain.modality'"),
        ("training.epochs", "two", "field 'training.epochs'"),
        ("screening.mode", "both", "field 'screening.mode'"),
        ("card_version", 99, "newer than this program reads"),
    ],
)
def test_invalid_cards_name_the_field(path, value, message):
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
        validate_card(_with(path, value), "model card m.json")


def test_postprocess_and_domain_are_optional_and_read_back():
    card = validate_card(
        {
            **MINIMAL,
            "postprocess": {"median_size": 3, "erode_px": 2, "min_component_px": 10},
            "domain": {"modality": "MR", "anatomy": "brain", "sequences": ["T1"]},
        }
    )
    assert card_postprocess(card) == {"median_size": 3, "erode_px": 2, "min_component_px": 10}
    assert card_domain(card) == {"modality": "MR", "anatomy": "brain", "sequences": ["T1"]}
    assert card_postprocess(MINIMAL) == {} and card_domain(MINIMAL) == {}
    shrink = validate_card({**MINIMAL, "postprocess": {"z_mm": 18.0, "z_edge": "shrink"}})
    assert card_postprocess(shrink) == {"z_mm": 18.0, "z_edge": "shrink"}
    from app.core.detector import PostProcessing

    post = PostProcessing(**card_postprocess(shrink))
    assert post.z_edge == "shrink" and post.as_dict()["z_edge"] == "shrink"
    assert "z_edge" not in PostProcessing(z_mm=18.0).as_dict()  # the default is not written: older cards read the same
    with pytest.raises(OptionError, match="z_edge"):
        PostProcessing(z_edge="reflect")


def test_read_card_tells_missing_unreadable_and_broken_apart(tmp_path, monkeypatch):
    p = tmp_path / "m.json"
    with pytest.raises(CheckpointError, match="not found"):
        read_card(p)
    p.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_card(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CheckpointError, match="not a text file"):
        read_card(p)
    p.write_text(json.dumps(MINIMAL))
    assert read_card(tmp_path / "m")["name"] == "m"
    if os.geteuid() != 0:  # root reads anything: there, the permission error is raised for real below
        p.chmod(0)
        with pytest.raises(CheckpointError, match="permission denied"):
            read_card(p)
        p.chmod(0o644)
    import pathlib

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    with pytest.raises(CheckpointError, match="cannot be read: permission denied") as e:
        read_card(p)
    assert "JSON" not in str(e.value)


def _calibrated(opts, max_steps):
    return {
        **MINIMAL,
        "chosen": {"eps": 1.0, "tau": 0.2, "tau_base": 0.2},
        "calibration": {"settings": {"max_steps": max_steps, "solver_options": opts}},
    }


def test_solver_for_warns_exactly_when_the_operator_differs():
    card = _calibrated(FAST.__dict__, 100)
    assert solver_for(card, "card") == (FAST, None)
    assert solver_for(card, "fast") == (FAST, None)  # the same options and budget: the same operator
    s, w = solver_for(card, "paper")
    assert s == PAPER and "spg/bf16, 100 steps" in w and "penalty/fp32, 1000 steps" in w
    s, w = solver_for(card, "card", max_steps=40)
    assert s.method == "spg" and s.max_steps == 40 and "spg/bf16, 40 steps" in w
    assert solver_for(card, "card", max_steps=100)[1] is None  # the card's own budget, named explicitly
    assert solver_for(MINIMAL, "fast")[1] is None  # no calibration: the tau is a fallback, nothing to warn
    with pytest.raises(OptionError):
        solver_for(card, "newton")
    assert "\n" not in w


def test_fallback_constants_are_the_documented_ones():
    from app.nets.card import FALLBACK_EPS, FALLBACK_EPS_RANGE, FALLBACK_TAU, card_choices

    assert (FALLBACK_EPS_RANGE, FALLBACK_EPS, FALLBACK_TAU) == ((0.0, 0.6), 0.1, 0.2)
    ch = card_choices(MINIMAL)
    assert ch == {"eps_min": 0.0, "eps_max": 0.6, "eps": 0.1, "tau": 0.2, "tau_base": 0.2}
    assert not math.isnan(ch["eps"])


def test_an_ensemble_card_is_checked_for_what_it_needs():
    from app.nets.card import validate_card

    card = {"name": "pair", "family": "ensemble",
            "members": [{"model": "a", "eps": 1.0, "scale_mg": 0.1, "scale_base": 0.2},
                        {"model": "b", "eps": 0.0, "scale_mg": 0.3, "scale_base": 0.4}],
            "postprocess": {"median_size": 3}, "chosen_volume": {"eps": 1.0, "tau": 0.02, "tau_base": 0.1}}  # fmt: skip
    assert validate_card(card) == card
    bad = json.loads(json.dumps(card))
    bad["members"][1]["scale_mg"] = 0
    with pytest.raises(CheckpointError, match=r"members\[1\]\.scale_mg"):
        validate_card(bad, "pair.json")
    with pytest.raises(CheckpointError, match="at least two members"):
        validate_card({**card, "members": card["members"][:1]})
    with pytest.raises(CheckpointError, match="missing field 'chosen_volume.tau_base'"):
        validate_card({**card, "chosen_volume": {"eps": 1.0, "tau": 0.02}})
    with pytest.raises(CheckpointError, match="field 'screening.mode'"):
        validate_card({**card, "screening": {"mode": "MatchGen"}})


def test_the_screening_mode_is_optional_and_matchgen_unless_a_card_says_base():
    from app.nets.card import card_screening_mode

    assert card_screening_mode(MINIMAL) == card_screening_mode(None) == "mg"
    base = validate_card({**MINIMAL, "screening": {"mode": "base", "chosen_on": "head-val", "rule": "r.md"}})
    assert card_screening_mode(base) == "base"
    assert card_screening_mode({**MINIMAL, "screening": {"mode": "mg"}}) == "mg"
    with pytest.raises(CheckpointError, match="missing field 'screening.mode'"):
        validate_card({**MINIMAL, "screening": {"chosen_on": "head-val"}})
    with pytest.raises(CheckpointError, match="field 'screening.rule'"):
        validate_card({**MINIMAL, "screening": {"mode": "base", "rule": 3}})


def test_a_screening_detection_outlines_at_its_tau_and_reports_above_its_cut():
    from app.nets.card import card_screening

    sc = {"mode": "base", "tau": 0.1, "report_above": 0.25}
    assert card_screening(validate_card({**MINIMAL, "screening": sc})) == sc
    assert card_screening({**MINIMAL, "screening": {"mode": "base"}}) == {
        "mode": "base",
        "tau": None,
        "report_above": None,
    }  # the base map with the card's tau_base, every finding reported
    assert card_screening({**MINIMAL, "screening": {**sc, "mode": "mg"}})["report_above"] is None  # base only
    assert card_screening(None)["mode"] == "mg"
    for bad, field in (
        ({**sc, "tau": 0}, "screening.tau"),
        ({**sc, "report_above": float("nan")}, "screening.report_above"),
        ({**sc, "report_above": "0.3"}, "screening.report_above"),
        ({**sc, "report_above": 0.05}, "screening.report_above"),  # below the outline: no finding could pass
    ):
        with pytest.raises(CheckpointError, match=f"field '{field}'"):
            validate_card({**MINIMAL, "screening": bad})
