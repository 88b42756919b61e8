"""How well does the worklist's order triage? The measurement ``bench triage --record`` keeps in a model card, and
whether it applies to a batch run with that card.

A worklist ranks studies by a study-level score (:data:`app.core.findings.SCORE_DEFINITION`). Whether that order
puts abnormal studies first is an empirical question, answered by ``bench triage`` on synthetic studies
(docs/batch.md). A reader looking at the order must see that answer beside it, and must not see an answer that
was measured with something else. So each measurement records what it was measured with:

* the model card's content without its ``triage`` entry (:func:`card_fingerprint`) and the weights' SHA-256: a
  recalibrated or retrained model needs a new measurement;
* the mode (``mg`` or ``base``), eps, tau, solver and step budget: a batch with ``--eps``, ``--tau``, ``--solver``
  or ``--max-steps`` of its own is another operator; and the cut above which findings are reported, where there is
  one (a card's screening detection, ``screening.report_above``): it changes the findings, not the order;
* the score's version (:data:`app.core.findings.SCORE_VERSION`).

:func:`triage_evidence` returns one of four states with a sentence for the reader: ``validated`` (the AUROC's 95 %
interval lies above 0.5), ``not-validated`` (it does not), ``stale`` (measured, but with other settings) and
``none`` (never measured). Test-split measurements are preferred to validation ones, and only held-out studies can
make an order ``validated``: the score was chosen on the validation studies, so its figure there is optimistic. An
order is ``validated`` only when every measurement of its operator lies above chance: when the held-out studies say
yes and the validation studies say no, the question is not settled (several models and modes are measured, and one
of them clearing 0.5 on 48 studies by chance is not rare).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from app.core.findings import SCORE_VERSION

#: the card key that holds the measurements (a list of :func:`triage_measurement` dicts)
CARD_KEY = "triage"
#: card keys that do not change what a run with a given operator computes: the measurements themselves, and the
#: mode ``batch`` runs by default (``screening``; the mode is part of the operator)
NOT_DETECTION = (CARD_KEY, "screening")
#: splits in order of preference for the headline (held-out studies first, whole-head studies before block ones)
SPLIT_ORDER = ("head-test", "test", "all", "head-val", "val")
#: splits whose studies are the whole head, as a scanner delivers them (app.bench.triage). Once an operator has a
#: measurement on them, they decide its state; block studies (17-23 slices cut from inside the brain, with two cut
#: ends through brain tissue) that do not lie above chance are then said beside it as a caveat, not a veto (decided
#: before the first whole-head run, docs/bench/triage-head/rule.md)
WHOLE_HEAD = ("head-test", "all", "head-val")
#: splits holding the studies a score was chosen on: their figure is optimistic, whatever it is
CHOSEN_ON = ("head-val", "val")
STATES = ("validated", "not-validated", "stale", "none")


def card_fingerprint(card: dict[str, Any]) -> str:
    """SHA-256 of the card's content without its triage measurements and its screening mode (:data:`NOT_DETECTION`;
    canonical JSON: sorted keys, no spaces), so recording a measurement or choosing ``batch``'s default mode does not
    change what the measurements are checked against, nor redo a batch's studies."""
    body = {k: v for k, v in card.items() if k not in NOT_DETECTION}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Operator:
    """What a worklist's detection was run with, beyond the card and weights: a measurement applies to a run only
    with the same operator."""

    mode: str  # "mg" (MatchGen) or "base" (eps 0)
    eps: float
    tau: float
    solver: str = "card"  # as detect --solver
    max_steps: int | None = None  # None: the card's step budget
    report_above: float | None = None  # findings reported only above this peak D (None: every finding)

    def __post_init__(self) -> None:
        if self.mode not in ("mg", "base"):
            raise ValueError(f"mode must be 'mg' or 'base', not {self.mode!r}")

    @classmethod
    def of(cls, settings: Any) -> Operator:
        """The operator of a batch run (anything with ``base_only``, ``eps``, ``tau``, ``solver``, ``max_steps`` and
        optionally ``report_above``)."""
        mode = "base" if settings.base_only else "mg"
        cut = getattr(settings, "report_above", None)
        return cls(
            mode, float(settings.eps), float(settings.tau), settings.solver, settings.max_steps,
            None if cut is None else float(cut),
        )  # fmt: skip


def triage_measurement(
    card: dict[str, Any],
    weights_sha256: str,
    op: Operator,
    *,
    split: str,
    auroc: float,
    ci95: list[float],
    n_normal: int,
    n_abnormal: int,
    loads: list[int],
    seed: int,
    measured: str,
    command: str = "",
    by_load: dict[str, float] | None = None,
    lesions_found: dict[str, dict[str, int]] | None = None,
    findings_per_normal_study: float | None = None,
) -> dict[str, Any]:
    """One measurement of a run with operator ``op``, as :func:`record_measurement` stores it in the card;
    ``by_load``: the AUROC of the normal studies against those with each lesion count (``{"1": 0.46, ...}``);
    ``lesions_found``: by lesion volume, how many of the abnormal studies' lesions the detection found
    (``{"under 1 ml": {"found": 0, "of": 53}, ...}``, app.bench.triage.lesions_found), and
    ``findings_per_normal_study`` the mean number of (false) findings on a normal study."""
    extra: dict[str, Any] = {}
    if by_load:
        extra["auroc_by_load"] = {str(k): float(v) for k, v in by_load.items()}
    if lesions_found:
        extra["lesions_found"] = {
            str(k): {"found": int(v["found"]), "of": int(v["of"])} for k, v in lesions_found.items()
        }
    if findings_per_normal_study is not None and math.isfinite(findings_per_normal_study):
        extra["findings_per_normal_study"] = float(findings_per_normal_study)
    return {
        "split": split,
        "mode": op.mode,
        "eps": float(op.eps),
        "tau": float(op.tau),
        "solver": op.solver,
        "max_steps": op.max_steps,
        **({"report_above": float(op.report_above)} if op.report_above is not None else {}),
        "score_version": SCORE_VERSION,
        "auroc": float(auroc),
        "ci95": [float(ci95[0]), float(ci95[1])],
        "n_normal": int(n_normal),
        "n_abnormal": int(n_abnormal),
        "loads": [int(k) for k in loads],
        "seed": int(seed),
        "card_fingerprint": card_fingerprint(card),
        "weights_sha256": weights_sha256,
        "measured": measured,
        "command": command,
        **extra,
    }


def record_measurement(card: dict[str, Any], measurement: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``card`` with ``measurement`` added; it replaces an earlier one of the same split, mode and
    reporting cut (a screening detection's measurement stands beside the plain base map's)."""

    def slot(m: dict[str, Any]) -> tuple:
        return m.get("split"), m.get("mode"), m.get("report_above")

    keep = [m for m in card.get(CARD_KEY) or [] if isinstance(m, dict) and slot(m) != slot(measurement)]
    return {**card, CARD_KEY: [*keep, measurement]}


@dataclass
class TriageEvidence:
    status: str  # one of STATES
    text: str  # one sentence for the reader
    measurement: dict[str, Any] | None = None  # the headline measurement (validated / not-validated)
    others: list[dict[str, Any]] = field(default_factory=list)  # further valid ones (e.g. the validation split)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _same(a: Any, b: float) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def _mismatch(m: dict[str, Any], fingerprint: str, weights_sha256: str, op: Operator) -> str:
    """Why measurement ``m`` (of the run's mode) does not apply to a run with operator ``op`` ("" when it does)."""
    if m.get("score_version") != SCORE_VERSION:
        return f"score version {m.get('score_version')}, not {SCORE_VERSION}"
    if m.get("card_fingerprint") != fingerprint:
        return "an earlier calibration of the model card"
    if weights_sha256 and m.get("weights_sha256") != weights_sha256:
        return "other weights"
    if not (_same(m.get("eps"), op.eps) and _same(m.get("tau"), op.tau)):
        return f"eps {m.get('eps')} and tau {m.get('tau')}"
    if (m.get("solver", "card"), m.get("max_steps")) != (op.solver, op.max_steps):
        budget = m.get("max_steps") or "the card's"
        return f"the {m.get('solver', 'card')} solver and {budget} steps"
    cut = m.get("report_above")
    if (cut is None) != (op.report_above is None) or (cut is not None and not _same(cut, op.report_above)):
        return "every finding reported" if cut is None else f"findings reported above D {cut}"
    return ""


def _above_chance(m: dict[str, Any]) -> bool:
    """Whether a measurement's 95 % interval lies above 0.5."""
    try:
        return float(m["ci95"][0]) > 0.5
    except (KeyError, TypeError, ValueError, IndexError):
        return False


def _studies(m: dict[str, Any], detail: bool = True) -> str:
    """The studies of measurement ``m`` in words, as in "48 synthetic held-out test studies (24 normal, 24 with 1-8
    lesions; by lesion count ...)"; without ``detail`` only their count and kind."""
    loads = m.get("loads") or []
    load_text = f"{min(loads)}-{max(loads)}" if len(set(loads)) > 1 else f"{loads[0]}" if loads else "some"
    where = {
        "test": "held-out test",
        "val": "validation",
        "all": "whole-head",
        "head-test": "whole-head held-out test",
        "head-val": "whole-head validation",
    }.get(str(m.get("split")), str(m.get("split")))
    n = int(m.get("n_normal", 0)) + int(m.get("n_abnormal", 0))
    if not detail:
        return f"{n} synthetic{' ' + where if where else ''} studies"
    return (
        f"{n} synthetic{' ' + where if where else ''} studies ({m.get('n_normal')} normal, "
        f"{m.get('n_abnormal')} with {load_text} lesions{_by_load(m)})"
    )


def _load_aurocs(m: dict[str, Any]) -> list[tuple[int, float]]:
    """(lesion count, AUROC) pairs a measurement recorded, by count; [] when it recorded none or they are unreadable."""
    try:
        return sorted((int(k), float(v)) for k, v in (m.get("auroc_by_load") or {}).items())
    except (TypeError, ValueError, AttributeError):
        return []


def _by_load(m: dict[str, Any]) -> str:
    """The AUROC by lesion count of a measurement that recorded it, as "; by lesion count 1 / 3 / 8: 0.46 / 0.83 /
    0.77"; else ""."""
    items = _load_aurocs(m)
    if len(items) < 2:
        return ""
    counts = " / ".join(str(k) for k, _ in items)
    return f"; by lesion count {counts}: {' / '.join(f'{v:.2f}' for _, v in items)}"


def _lesions(m: dict[str, Any]) -> str:
    """The lesions a measurement's detection found, by volume, as " The detection found 0 of 53 lesions under 1 ml,
    17 of 30 at 1-5 ml and 11 of 13 at 5 ml or more, with 3.2 false findings per normal study."; "" when it
    recorded none."""
    try:
        bins = [(str(k), int(v["found"]), int(v["of"])) for k, v in (m.get("lesions_found") or {}).items()]
    except (TypeError, ValueError, KeyError, AttributeError):
        return ""
    bins = [b for b in bins if b[2] > 0]
    if not bins:
        return ""
    parts = [f"{f} of {n}{' lesions' if i == 0 else ''} {k if k.startswith('under') else 'at ' + k}"
             for i, (k, f, n) in enumerate(bins)]  # fmt: skip
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    text = f" The detection found {listed}"
    fp = m.get("findings_per_normal_study")
    if isinstance(fp, int | float) and math.isfinite(fp):
        text += f", with {fp:.1f} false findings per normal study"
    return text + "."


def _chance_loads(m: dict[str, Any]) -> list[int]:
    """The lesion counts whose studies a measurement ranked no higher than the normal ones (AUROC <= 0.5)."""
    return [k for k, v in _load_aurocs(m) if v <= 0.5]


def triage_evidence(card: dict[str, Any] | None, weights_sha256: str, op: Operator) -> TriageEvidence:
    """What the card says about how well a worklist run with operator ``op`` triages (module docstring)."""
    measured = [m for m in (card or {}).get(CARD_KEY) or [] if isinstance(m, dict) and m.get("mode") == op.mode]
    if not measured:
        what = "this model with MatchGen" if op.mode == "mg" else "this model's base map"
        return TriageEvidence(
            "none",
            f"How well this order triages was never measured for {what} (bench triage --record): "
            "read every study, whatever its rank.",
        )
    fp = card_fingerprint(card or {})
    why = [_mismatch(m, fp, weights_sha256, op) for m in measured]
    valid = [m for m, w in zip(measured, why, strict=True) if not w]
    if not valid:
        return TriageEvidence(
            "stale",
            f"The model card's triage measurement was made with {why[0]}: how well this order triages is "
            "unknown. Read every study, whatever its rank.",
        )
    valid.sort(key=lambda m: SPLIT_ORDER.index(m["split"]) if m.get("split") in SPLIT_ORDER else len(SPLIT_ORDER))
    deciding = [m for m in valid if m.get("split") in WHOLE_HEAD] or valid
    blocks = [m for m in valid if m not in deciding]  # block studies, beside whole-head ones
    head, others = deciding[0], [*deciding[1:], *blocks]
    try:
        auroc, (lo, hi) = float(head["auroc"]), (float(v) for v in head["ci95"])
    except (KeyError, TypeError, ValueError):
        return TriageEvidence("stale", "The model card's triage measurement is incomplete: read every study.")
    figure = f"AUROC {auroc:.2f} [95 % {lo:.2f}-{hi:.2f}] on {_studies(head)}"
    if head.get("split") in CHOSEN_ON:  # the studies the score was chosen on: optimistic, whatever the figure
        text = (
            f"Triage not validated on held-out studies: measured only on the studies the score was chosen on, "
            f"{figure}. Read every study.{_lesions(head)}"
        )
        return TriageEvidence("not-validated", text, head, others)
    disagree = [m for m in deciding[1:] if not _above_chance(m)]
    if lo > 0.5 and not disagree:
        text = (
            f"Triage measured: {figure}. Abnormal studies tend to rank first, but a low rank does not rule out a "
            "lesion."
        )
        weak = _chance_loads(head)
        if weak:  # a load the order does not put above normal studies: say it in words, not only in figures
            counts = " or ".join(str(k) for k in weak)
            text += f" Studies with {counts} lesion{'s' if weak != [1] else ''} ranked no higher than normal ones."
        text += _lesions(head)
        cut = [m for m in blocks if not _above_chance(m)]
        if cut:  # the whole head decides; studies that cover only part of the brain were not triaged
            c = cut[0]
            text += f" Not on studies cut from inside the brain: AUROC {float(c['auroc']):.2f} on {_studies(c, False)}."
        return TriageEvidence("validated", text, head, others)
    if lo > 0.5:  # held-out studies say yes, another measurement of the same operator says no: not settled
        o = disagree[0]
        text = (
            f"Triage not validated: {figure}, but AUROC {float(o['auroc']):.2f} on {_studies(o)}. The measurements "
            f"disagree: read every study.{_lesions(head)}"
        )
        return TriageEvidence("not-validated", text, head, others)
    text = (
        f"Triage not validated: {figure}. The order does not reliably put abnormal studies first: read every "
        f"study.{_lesions(head)}"
    )
    return TriageEvidence("not-validated", text, head, others)
