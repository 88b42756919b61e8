"""Model cards: the validation choice is applied with the solver it was made with."""

from app.core.matchgen import FAST, SolverOptions
from app.nets.card import FALLBACK_EPS_RANGE, card_choices, card_solver


def calibrated_card(**solver_overrides):
    opts = {**FAST.__dict__, **solver_overrides}
    return {
        "eps_range": {"eps_max": 60.0, "grid": [0.0, 30.0, 60.0]},
        "chosen": {"eps": 30.0, "tau": 0.25, "tau_base": 0.2},
        "calibration": {"settings": {"max_steps": 100, "solver_options": opts}},
    }


def test_card_solver_is_the_calibration_solver_with_its_step_budget():
    s = card_solver(calibrated_card())
    assert s.method == "spg" and s.precision == "bf16" and s.patience == FAST.patience
    assert s.max_steps == 100  # the per-eps budget the choice was made with, not the options' default


def test_card_without_calibration_uses_the_paper_solver_and_fallbacks():
    assert card_solver({}) == SolverOptions()
    ch = card_choices({})
    assert (ch["eps_min"], ch["eps_max"]) == FALLBACK_EPS_RANGE


def test_damaged_calibration_falls_back_without_crashing():
    assert card_solver(calibrated_card(method="newton")) == SolverOptions()
    assert card_solver({"calibration": {"settings": {"solver_options": "spg"}}}) == SolverOptions()
    s = card_solver(calibrated_card(unknown_option=3, lr=[1, 2]))  # unknown keys and wrong types are ignored
    assert s.method == "spg"


def test_chosen_values_come_from_the_card():
    ch = card_choices(calibrated_card())
    assert ch["eps"] == 30.0 and ch["tau"] == 0.25 and ch["tau_base"] == 0.2 and ch["eps_max"] == 60.0


def test_shipped_default_model_card_names_its_solver():
    from app.nets.card import is_ensemble_card
    from app.nets.checkpoint import read_card
    from app.nets.zoo import DEFAULT_MODEL, resolve_model

    default = read_card(resolve_model(DEFAULT_MODEL))
    # every model the default runs: itself, or an ensemble's members
    names = [m["model"] for m in default["members"]] if is_ensemble_card(default) else [DEFAULT_MODEL]
    for name in names:
        card = read_card(resolve_model(name))
        solver = card_solver(card)
        settings = card["calibration"]["settings"]
        assert solver.method == settings["solver_options"]["method"]
        assert solver.max_steps == settings["max_steps"]


def test_channels_last_follows_the_calibration_layout():
    from app.nets.card import card_channels_last

    assert card_channels_last({"calibration": {"settings": {"solver": "fast"}}})  # older cards: fast implies it
    assert not card_channels_last({"calibration": {"settings": {"solver": "paper"}}})
    assert not card_channels_last({"calibration": {"settings": {"solver": "fast", "channels_last": False}}})
    assert not card_channels_last({"calibration": {"settings": {"channels_last": "yes"}}})  # damaged: stock layout
    assert not card_channels_last({})


def test_viewer_uses_the_cards_layout(tmp_path):
    import copy

    import torch

    from app.nets.card import card_channels_last
    from app.nets.checkpoint import load_checkpoint
    from app.nets.zoo import resolve_model
    from app.viewer.compute import ModelSession

    for want in (True, False):  # the dae's card says one layout; a copy says the other
        model, card = load_checkpoint(resolve_model("dae"), "cpu")
        card = copy.deepcopy(card)
        card["calibration"]["settings"]["channels_last"] = want
        card["calibration"]["settings"]["solver"] = "fast"
        assert card_channels_last(card) is want
        sess = ModelSession("dae", model, card)
        assert sess.detector.channels_last is want
        # a weight with one input channel is contiguous in both layouts: look at one that is not
        conv = next(m for m in sess.detector.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) is want
