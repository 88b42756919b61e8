"""The triage measurement a model card keeps, and when it applies to a batch run: known answers for each state."""

import pytest

from app.core.findings import SCORE_VERSION
from app.core.triage_evidence import (
    Operator,
    card_fingerprint,
    record_measurement,
    triage_evidence,
    triage_measurement,
)

CARD = {"name": "m", "family": "dae", "chosen_volume": {"eps": 15.0, "tau": 0.04, "tau_base": 0.12}}
RUN = Operator("mg", 15.0, 0.04)


def measure(card, split="test", mode="mg", auroc=0.53, ci=(0.36, 0.70), eps=15.0, tau=0.04, weights="w1", by_load=None,
            **kw):  # fmt: skip
    return triage_measurement(
        card, weights, Operator(mode, eps, tau, **kw), split=split, auroc=auroc, ci95=list(ci), n_normal=24,
        n_abnormal=24, loads=[1, 3, 8], seed=3, measured="2026-12-05", by_load=by_load,
    )  # fmt: skip


def test_never_measured():
    ev = triage_evidence(CARD, "w1", RUN)
    assert ev.status == "none" and "never measured" in ev.text and ev.measurement is None
    assert triage_evidence(None, "w1", RUN).status == "none"  # an unreadable card counts as unmeasured


def test_an_interval_across_one_half_is_not_validated():
    card = record_measurement(CARD, measure(CARD))
    ev = triage_evidence(card, "w1", RUN)
    assert ev.status == "not-validated" and ev.measurement["auroc"] == 0.53
    assert "AUROC 0.53 [95 % 0.36-0.70] on 48 synthetic held-out test studies (24 normal, 24 with 1-8 lesions)" in (
        ev.text
    )
    assert "read every study" in ev.text


def test_an_interval_above_one_half_is_validated():
    card = record_measurement(CARD, measure(CARD, auroc=0.81, ci=(0.68, 0.92)))
    ev = triage_evidence(card, "w1", RUN)
    assert ev.status == "validated" and "AUROC 0.81 [95 % 0.68-0.92]" in ev.text
    assert "does not rule out" in ev.text  # a low rank is still no all-clear


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"card": {**CARD, "chosen_volume": {"eps": 9.0, "tau": 0.05, "tau_base": 0.12}}}, "earlier calibration"),
        ({"weights": "w2"}, "other weights"),
        ({"tau": 0.05}, "eps 15.0 and tau 0.04"),
        ({"max_steps": 10}, "card solver and the card's steps"),
        ({"solver": "paper"}, "card solver"),
    ],
)
def test_a_measurement_of_something_else_is_stale(change, reason):
    card = record_measurement(CARD, measure(CARD))
    if "card" in change:  # recalibrated after the measurement: the measurement stays in the card, but stale
        card = {**change["card"], "triage": card["triage"]}
    run = {"mode": RUN.mode, "eps": RUN.eps, "tau": RUN.tau}
    run.update({k: v for k, v in change.items() if k in ("eps", "tau", "solver", "max_steps")})
    ev = triage_evidence(card, change.get("weights", "w1"), Operator(**run))
    assert ev.status == "stale" and reason in ev.text and "unknown" in ev.text


def test_a_measurement_of_the_other_mode_says_nothing_of_this_one():
    card = record_measurement(CARD, measure(CARD))  # + MG
    ev = triage_evidence(card, "w1", Operator("base", 0.0, 0.12))
    assert ev.status == "none" and "base map" in ev.text


def test_a_screening_detection_is_its_own_operator_and_its_measurement_stands_beside_the_base_maps():
    """Findings reported above a cut (a card's screening detection) are another operator than every finding at the
    same tau, and a measurement of each keeps its own slot in the card."""
    plain = measure(CARD, split="head-test", mode="base", eps=0.0, tau=0.12, auroc=0.82, ci=(0.69, 0.93))
    cut = measure(CARD, split="head-test", mode="base", eps=0.0, tau=0.1, auroc=0.7, ci=(0.55, 0.84), report_above=0.23)
    assert "report_above" not in plain and cut["report_above"] == 0.23
    card = record_measurement(record_measurement(CARD, plain), cut)
    assert len(card["triage"]) == 2  # the same split and mode, another cut: both kept
    assert len(record_measurement(card, {**cut, "auroc": 0.71})["triage"]) == 2  # the same cut again: replaced
    screen = triage_evidence(card, "w1", Operator("base", 0.0, 0.1, report_above=0.23))
    assert screen.status == "validated" and screen.measurement["auroc"] == 0.7
    base = triage_evidence(card, "w1", Operator("base", 0.0, 0.12))
    assert base.status == "validated" and base.measurement["auroc"] == 0.82
    other = triage_evidence(record_measurement(CARD, cut), "w1", Operator("base", 0.0, 0.1, report_above=0.3))
    assert other.status == "stale" and "findings reported above D 0.23" in other.text
    every = triage_evidence(record_measurement(CARD, cut), "w1", Operator("base", 0.0, 0.1))
    assert every.status == "stale" and "findings reported above D 0.23" in every.text
    only_every = triage_evidence(record_measurement(CARD, plain), "w1", Operator("base", 0.0, 0.12, report_above=0.23))
    assert only_every.status == "stale" and "every finding reported" in only_every.text

    class Settings:  # a batch run's settings carry the cut into its operator
        base_only, eps, tau, solver, max_steps, report_above = True, 0.0, 0.1, "card", None, 0.23

    assert Operator.of(Settings) == Operator("base", 0.0, 0.1, report_above=0.23)


def test_another_score_version_is_stale():
    m = {**measure(CARD), "score_version": SCORE_VERSION - 1}
    ev = triage_evidence(record_measurement(CARD, m), "w1", RUN)
    assert ev.status == "stale" and f"score version {SCORE_VERSION - 1}" in ev.text


def test_held_out_studies_are_the_headline_and_a_rerun_replaces_its_own_split():
    card = record_measurement(CARD, measure(CARD, split="val", auroc=0.78, ci=(0.63, 0.89)))
    card = record_measurement(card, measure(card, split="test"))
    ev = triage_evidence(card, "w1", RUN)
    assert ev.measurement["split"] == "test" and [m["split"] for m in ev.others] == ["val"]
    assert ev.status == "not-validated"  # validation's better figure does not speak for held-out studies
    again = record_measurement(card, measure(card, split="test", auroc=0.6, ci=(0.51, 0.7)))
    assert [(m["split"], m["auroc"]) for m in again["triage"]] == [("val", 0.78), ("test", 0.6)]
    assert triage_evidence(again, "w1", RUN).status == "validated"
    base = record_measurement(again, measure(again, mode="base", eps=0.0, tau=0.12))
    assert len(base["triage"]) == 3  # another mode is another measurement


def test_validation_studies_alone_never_validate_the_order():
    card = record_measurement(CARD, measure(CARD, split="val", auroc=0.78, ci=(0.63, 0.89)))
    ev = triage_evidence(card, "w1", RUN)
    assert ev.status == "not-validated" and "chosen on" in ev.text and "AUROC 0.78" in ev.text


def test_held_out_and_validation_studies_that_disagree_do_not_validate():
    card = record_measurement(CARD, measure(CARD, split="val", auroc=0.42, ci=(0.28, 0.55)))
    card = record_measurement(card, measure(card, split="test", auroc=0.65, ci=(0.52, 0.75)))
    ev = triage_evidence(card, "w1", RUN)
    assert ev.status == "not-validated" and ev.measurement["split"] == "test"
    assert "AUROC 0.65 [95 % 0.52-0.75]" in ev.text and "AUROC 0.42 on 48 synthetic validation" in ev.text
    agree = record_measurement(card, measure(card, split="val", auroc=0.7, ci=(0.55, 0.83)))
    assert triage_evidence(agree, "w1", RUN).status == "validated"


def test_whole_head_studies_decide_and_cut_studies_below_chance_are_said_beside():
    """Once whole-head studies are measured they decide the state; block studies (cut from inside the brain) that
    do not lie above chance no longer veto it but are named in the sentence."""
    card = record_measurement(CARD, measure(CARD, split="val", auroc=0.73, ci=(0.57, 0.86)))
    card = record_measurement(card, measure(card, split="test", auroc=0.49, ci=(0.33, 0.66)))
    assert triage_evidence(card, "w1", RUN).status == "not-validated"
    chosen = record_measurement(card, measure(card, split="head-val", auroc=0.81, ci=(0.69, 0.91)))
    ev = triage_evidence(chosen, "w1", RUN)  # the whole-head studies the score was chosen on: never enough
    assert ev.status == "not-validated" and ev.measurement["split"] == "head-val" and "chosen on" in ev.text
    loads = {"1": 0.46, "8": 0.77, "3": 0.83}
    held = record_measurement(chosen, measure(chosen, split="head-test", auroc=0.77, ci=(0.63, 0.89), by_load=loads))
    ev = triage_evidence(held, "w1", RUN)
    assert ev.status == "validated" and ev.measurement["split"] == "head-test"
    assert [m["split"] for m in ev.others] == ["head-val", "test", "val"]
    assert "AUROC 0.77 [95 % 0.63-0.89] on 48 synthetic whole-head held-out test studies" in ev.text
    assert "24 with 1-8 lesions; by lesion count 1 / 3 / 8: 0.46 / 0.83 / 0.77)" in ev.text  # single ones fare worst
    assert "Studies with 1 lesion ranked no higher than normal ones." in ev.text
    assert "Not on studies cut from inside the brain: AUROC 0.49 on 48 synthetic held-out test" in ev.text
    fails = record_measurement(held, measure(held, split="head-test", auroc=0.6, ci=(0.45, 0.74)))
    ev = triage_evidence(fails, "w1", RUN)
    assert ev.status == "not-validated" and ev.measurement["split"] == "head-test" and "0.60" in ev.text
    split_vote = record_measurement(held, measure(held, split="head-val", auroc=0.55, ci=(0.4, 0.7)))
    assert triage_evidence(split_vote, "w1", RUN).status == "not-validated"  # whole-head splits disagree


def test_the_fingerprint_ignores_the_measurements_and_the_screening_mode_only():
    card = record_measurement(CARD, measure(CARD))
    assert card_fingerprint(card) == card_fingerprint(CARD)
    assert card_fingerprint({**card, "screening": {"mode": "base"}}) == card_fingerprint(CARD)  # batch's default mode
    assert card_fingerprint({**CARD, "postprocess": {"z_mm": 18.0}}) != card_fingerprint(CARD)
    with pytest.raises(ValueError):
        Operator("both", 1.0, 0.1)


def test_the_lesions_the_detection_found_are_said_by_volume():
    """A measurement that recorded the lesions its detection found says them, by volume, with the false findings
    per normal study, whatever its state; bins without lesions are left out; older measurements say nothing."""
    found = {
        "under 1 ml": {"found": 0, "of": 53},
        "1-5 ml": {"found": 17, "of": 30},
        "5 ml or more": {"found": 11, "of": 13},
    }
    m = triage_measurement(CARD, "w1", RUN, split="head-test", auroc=0.69, ci95=[0.52, 0.83], n_normal=24,
                           n_abnormal=24, loads=[1, 3, 8], seed=13, measured="2026-12-06", lesions_found=found,
                           findings_per_normal_study=3.26)  # fmt: skip
    assert m["lesions_found"]["1-5 ml"] == {"found": 17, "of": 30} and m["findings_per_normal_study"] == 3.26
    said = (
        "The detection found 0 of 53 lesions under 1 ml, 17 of 30 at 1-5 ml and 11 of 13 at 5 ml or more, with 3.3 "
        "false findings per normal study."
    )
    ev = triage_evidence(record_measurement(CARD, m), "w1", RUN)
    assert ev.status == "validated" and said in ev.text
    assert ev.text.index("does not rule out") < ev.text.index("The detection found")
    low = {**m, "auroc": 0.55, "ci95": [0.4, 0.7]}
    ev = triage_evidence(record_measurement(CARD, low), "w1", RUN)
    assert ev.status == "not-validated" and said in ev.text
    none_small = {**m, "lesions_found": {**found, "under 1 ml": {"found": 0, "of": 0}}}
    text = triage_evidence(record_measurement(CARD, none_small), "w1", RUN).text
    assert "The detection found 17 of 30 lesions at 1-5 ml and 11 of 13 at 5 ml or more," in text
    assert "under 1 ml" not in text
    older = {k: v for k, v in m.items() if k not in ("lesions_found", "findings_per_normal_study")}
    assert "detection found" not in triage_evidence(record_measurement(CARD, older), "w1", RUN).text
