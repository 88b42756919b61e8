"""Model cards: one versioned schema, validated on load, and the one place that reads a card's choices.

A card (``models/NAME.json``, beside ``NAME.safetensors``) records what a checkpoint is (family, config), how it
was trained, and its validation calibration: the eps range, the (eps, tau) chosen on validation and the solver
those choices were made with. ``detect``, ``bench speed``, ``bench quality``, the viewer and the figures read all
of it through the functions below, with the same fallbacks:

* :func:`read_card` / :func:`validate_card` -- the schema (:data:`CARD_VERSION` 2). Required: ``name``,
  ``family``, ``config`` (with ``family``, ``image_size``, ``channels``, ``normalization``). Optional, checked
  when present: ``status``, ``training`` (``epochs``, ``training_time_s``, ...), ``history``, ``eps_range``,
  ``chosen`` (``eps``, ``tau``, ``tau_base``), ``calibration`` (``settings.solver_options``,
  ``settings.max_steps``, ``settings.channels_last``), ``postprocess`` (``median_size``, ``erode_px``,
  ``min_component_px``: non-negative integers) and ``domain`` (what the model is for: ``modality``, ``anatomy``,
  ... as strings or lists of strings) and ``screening`` (``mode``: ``"mg"`` or ``"base"``, the mode ``batch`` runs
  by default, with ``chosen_on`` and ``rule`` saying how it was chosen; for the base mode optionally ``tau``, the
  outline of its findings, and ``report_above``, the peak D above which a finding is reported, both > 0 and the
  second above the first; :func:`card_screening_mode`, :func:`card_screening`). Other keys
  are kept as they are, among them ``triage``: the worklist score's measured AUROC, written by ``bench triage
  --record`` and read by :mod:`app.core.triage_evidence`. An
  invalid card raises :class:`~app.errors.CheckpointError` naming the field. Version-1 cards are migrated on load
  (:func:`migrate_card`): their flat copies of the training facts (top-level ``epochs``, ``train_seconds``,
  ``data``, ``val_loss``; only some v1 cards had them) move into ``training``.
* :func:`card_choices` -- eps range and (eps, tau, tau_base); :func:`choice_sources` -- where each came from.
* :func:`card_eps_grid` -- the eps values the calibration searched.
* :func:`card_solver` / :func:`solver_for` -- the solver (options and step budget) the choices were made with;
  :func:`solver_for` also says, in one line, when a requested solver differs from it.
* :func:`card_channels_last`, :func:`card_postprocess`, :func:`card_domain`, :func:`card_training`,
  :func:`card_screening_mode`, :func:`card_screening`, :func:`card_screening_outline`, :func:`card_batch_detection`.

Cards without a calibration fall back to documented defaults: eps range [0, 0.6] (the paper's), eps 0.1,
tau 0.2, and the paper-faithful solver (penalty method, Adam lr 1e-3).

This module imports no ``app.core`` (the solver's options live in :mod:`app.solver_options`), so that
``app.core`` may use the models without the two packages importing each other.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from app.errors import CheckpointError, OptionError
from app.solver_options import FAST, PAPER, SolverOptions

#: the schema version :func:`validate_card` produces and ``save_checkpoint`` writes
CARD_VERSION = 2

#: eps range and (eps, tau) used when a model card does not name them (DESIGN.md: eps in [0, 0.6])
FALLBACK_EPS_RANGE = (0.0, 0.6)
FALLBACK_EPS = 0.1
FALLBACK_TAU = 0.2

#: the post-processing keys a card may set: non-negative integers (pixels of the model's grid), ``z_mm``, a
#: non-negative number of millimetres (D averaged over the axial slices of a window that wide; whole volumes only),
#: and ``z_edge``, what that window does at the ends of a volume (:data:`Z_EDGES`; absent: "nearest")
POSTPROCESS_KEYS = ("median_size", "erode_px", "min_component_px", "z_mm", "z_edge")
_POSTPROCESS_MM = ("z_mm",)

#: the z window at the ends of a volume: "nearest" repeats the end slice (scipy's ``nearest`` mode: the end slice
#: takes half the weights of its window), "shrink" averages the window's slices that lie in the volume
Z_EDGES = ("nearest", "shrink")


def _post_value_ok(key: str, v: Any) -> bool:
    """A valid value for post-processing ``key``: one of :data:`Z_EDGES` for ``z_edge``, a number of mm >= 0 for
    ``z_mm``, else an integer >= 0."""
    if key == "z_edge":
        return v in Z_EDGES
    return (_is_num(v) if key in _POSTPROCESS_MM else _is_int(v)) and v >= 0


#: v1 cards carried these training facts twice (flat and under "training"); v2 keeps them under "training"
_V1_FLAT = {"epochs": "epochs", "train_seconds": "training_time_s", "data": "data_dir"}

#: the solver names ``detect --solver`` and the benchmarks accept
SOLVER_NAMES = ("card", "paper", "fast")


# --- schema ----------------------------------------------------------------------------------------------------
def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Checker:
    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, what: str) -> None:
        raise CheckpointError(f"{self.where}: {what} (field '{field}')")

    def need(self, d: dict, key: str, prefix: str = "") -> Any:
        if key not in d:
            raise CheckpointError(f"{self.where}: missing field '{prefix}{key}'")
        return d[key]

    def kind(self, v: Any, ok: bool, field: str, expected: str) -> None:
        if not ok:
            self.fail(field, f"must be {expected}, got {json.dumps(v, default=str)[:60]}")


def migrate_card(card: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``card`` in the current schema. Version 1 (or no version): the flat training facts move into
    ``training`` (kept there if already present) and ``card_version`` becomes :data:`CARD_VERSION`."""
    out = copy.deepcopy(card)
    version = out.get("card_version", 1)
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if _is_int(version) and version > CARD_VERSION:
        raise CheckpointError(
            f"model card version {version} is newer than this program reads ({CARD_VERSION}); update MatchGen Viewer"
        )
    if version == 1 or version is None:
        version = CARD_VERSION
    # flat copies of training facts (v1 cards; writers that still add them): into "training", once
    training = out.get("training")
    if training is None and any(k in out for k in _V1_FLAT):  # v1 cards that only had the flat copies
        training = out["training"] = {}
    if "val_loss" in out:  # the flat copy of the top-level final_val_loss
        out.setdefault("final_val_loss", out.pop("val_loss"))
    if isinstance(training, dict):
        for flat, nested in _V1_FLAT.items():
            if flat in out:
                training.setdefault(nested, out.pop(flat))
    out["card_version"] = version
    return out


#: the family of an ensemble card (app.core.ensemble): members' maps averaged, no weights of its own
ENSEMBLE_FAMILY = "ensemble"


def read_raw_card(path: str | os.PathLike) -> dict | None:
    """The card file's JSON as written (no validation or migration: what fingerprints and triage measurements are
    computed on); None when it cannot be read as a JSON object (loading the model then says why)."""
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def is_ensemble_card(card: dict[str, Any] | None) -> bool:
    return isinstance(card, dict) and card.get("family") == ENSEMBLE_FAMILY


def _validate_ensemble(card: dict[str, Any], c: _Checker) -> dict[str, Any]:
    """An ensemble card (app.core.ensemble): at least two members, each naming a model with its eps and positive
    scales; a post-processing object; the whole-volume choice (eps factor, tau, tau_base)."""
    members = c.need(card, "members")
    c.kind(members, isinstance(members, list) and len(members) >= 2, "members", "a list of at least two members")
    for i, m in enumerate(members):
        c.kind(m, isinstance(m, dict), f"members[{i}]", "an object")
        c.kind(c.need(m, "model", f"members[{i}]."), isinstance(m["model"], str) and m["model"] != "",
               f"members[{i}].model", "a model name or path")  # fmt: skip
        for key in ("eps", "scale_mg", "scale_base"):
            v = c.need(m, key, f"members[{i}].")
            ok = _is_num(v) and math.isfinite(v) and (v >= 0 if key == "eps" else v > 0)
            c.kind(v, ok, f"members[{i}].{key}", "a number >= 0" if key == "eps" else "a number > 0")
    c.kind(c.need(card, "postprocess"), isinstance(card["postprocess"], dict), "postprocess", "an object")
    cv = c.need(card, "chosen_volume")
    c.kind(cv, isinstance(cv, dict), "chosen_volume", "an object")
    for key in ("eps", "tau", "tau_base"):
        v = c.need(cv, key, "chosen_volume.")
        c.kind(v, _is_num(v) and math.isfinite(v) and v >= 0, f"chosen_volume.{key}", "a number >= 0")
    _check_screening(card, c)
    return card


#: the modes ``batch`` can run by default (a card's ``screening.mode``): MatchGen, or the base model alone
SCREENING_MODES = ("mg", "base")


def _check_screening(card: dict[str, Any], c: _Checker) -> None:
    if "screening" not in card:
        return
    sc = card["screening"]
    c.kind(sc, isinstance(sc, dict), "screening", "an object")
    mode = c.need(sc, "mode", "screening.")
    c.kind(mode, mode in SCREENING_MODES, "screening.mode", " or ".join(f'"{m}"' for m in SCREENING_MODES))
    for key in ("chosen_on", "rule"):
        if key in sc:
            c.kind(sc[key], isinstance(sc[key], str), f"screening.{key}", "a string")
    for key in ("tau", "report_above"):
        if key in sc:
            v = sc[key]
            c.kind(v, _is_num(v) and math.isfinite(v) and v > 0, f"screening.{key}", "a number > 0")
    if "tau" in sc and "report_above" in sc and not sc["report_above"] > sc["tau"]:
        c.fail("screening.report_above", "must be above screening.tau (a finding's peak D lies above its outline)")


def validate_card(card: Any, where: str = "model card") -> dict[str, Any]:
    """The card migrated to the current schema and checked; raises CheckpointError naming the first bad or
    missing field (``where`` starts the message, e.g. the card's path)."""
    c = _Checker(where)
    if not isinstance(card, dict):
        raise CheckpointError(f"{where}: a model card is a JSON object, got {type(card).__name__}")
    if is_ensemble_card(card):
        return _validate_ensemble(copy.deepcopy(card), c)
    card = migrate_card(card)
    c.kind(card["card_version"], card["card_version"] == CARD_VERSION, "card_version", f"{CARD_VERSION}")
    for key in ("name", "family"):
        v = c.need(card, key)
        c.kind(v, isinstance(v, str) and v != "", key, "a non-empty string")
    cfg = c.need(card, "config")
    c.kind(cfg, isinstance(cfg, dict), "config", "an object")
    fam = c.need(cfg, "family", "config.")
    c.kind(fam, isinstance(fam, str) and fam != "", "config.family", "a non-empty string")
    if fam != card["family"]:
        c.fail("config.family", f"config.family {fam!r} differs from family {card['family']!r}")
    size = c.need(cfg, "image_size", "config.")
    c.kind(size, _is_int(size) and size >= 8, "config.image_size", "an integer >= 8")
    ch = c.need(cfg, "channels", "config.")
    c.kind(ch, _is_int(ch) and ch in (1, 3), "config.channels", "1 or 3")
    norm = c.need(cfg, "normalization", "config.")
    c.kind(norm, isinstance(norm, str) and norm != "", "config.normalization", "a non-empty string")
    for key in ("latent_dim", "width"):
        if key in cfg:
            c.kind(cfg[key], _is_int(cfg[key]) and cfg[key] >= 1, f"config.{key}", "a positive integer")
    if "extra" in cfg:
        c.kind(cfg["extra"], isinstance(cfg["extra"], dict), "config.extra", "an object")

    if "status" in card:
        c.kind(card["status"], card["status"] in ("trained", "training"), "status", "'trained' or 'training'")
    if "training" in card:
        tr = card["training"]
        c.kind(tr, isinstance(tr, dict), "training", "an object")
        for key in ("epochs", "training_time_s"):
            if key in tr:
                c.kind(tr[key], _is_num(tr[key]) and tr[key] >= 0, f"training.{key}", "a number >= 0")
    if "history" in card:
        c.kind(card["history"], isinstance(card["history"], list), "history", "a list")
    if "eps_range" in card:
        rng = card["eps_range"]
        if isinstance(rng, dict):
            if "eps_max" in rng:
                c.kind(rng["eps_max"], _is_num(rng["eps_max"]) and rng["eps_max"] > 0, "eps_range.eps_max", "> 0")
            if "grid" in rng:
                g = rng["grid"]
                ok = isinstance(g, list) and all(_is_num(v) and v >= 0 for v in g)
                c.kind(g, ok, "eps_range.grid", "a list of numbers >= 0")
        else:
            ok = isinstance(rng, list) and len(rng) == 2 and all(_is_num(v) and v >= 0 for v in rng)
            c.kind(rng, ok and rng[1] > 0, "eps_range", "{eps_max, grid} or [lo, hi] with hi > 0")
    if "chosen" in card:
        chosen = card["chosen"]
        c.kind(chosen, isinstance(chosen, dict), "chosen", "an object")
        if "eps" in chosen:
            c.kind(chosen["eps"], _is_num(chosen["eps"]) and chosen["eps"] >= 0, "chosen.eps", "a number >= 0")
        for key in ("tau", "tau_base"):
            if key in chosen:
                v = chosen[key]
                c.kind(v, _is_num(v) and 0 <= v <= 1, f"chosen.{key}", "a number in [0, 1]")
    if "chosen_volume" in card:
        cv = card["chosen_volume"]
        c.kind(cv, isinstance(cv, dict), "chosen_volume", "an object")
        for key in ("eps", "tau", "tau_base"):
            if key in cv:
                v = cv[key]
                ok = _is_num(v) and (v >= 0 if key == "eps" else 0 <= v <= 1)
                c.kind(v, ok, f"chosen_volume.{key}", "a number >= 0" if key == "eps" else "a number in [0, 1]")
    if "calibration" in card:
        cal = card["calibration"]
        c.kind(cal, isinstance(cal, dict), "calibration", "an object")
        st = cal.get("settings", {})
        c.kind(st, isinstance(st, dict), "calibration.settings", "an object")
        if "solver_options" in st:
            so = st["solver_options"]
            c.kind(so, isinstance(so, dict), "calibration.settings.solver_options", "an object")
            try:
                _solver_from(so, st.get("max_steps"))
            except (TypeError, ValueError, OptionError) as exc:
                c.fail("calibration.settings.solver_options", f"names an invalid solver ({exc})")
        if "max_steps" in st:
            v = st["max_steps"]
            c.kind(v, v is None or (_is_int(v) and v >= 0), "calibration.settings.max_steps", "an integer >= 0")
        if "channels_last" in st:
            v = st["channels_last"]
            c.kind(v, isinstance(v, bool), "calibration.settings.channels_last", "true or false")
    if "postprocess" in card:
        pp = card["postprocess"]
        c.kind(pp, isinstance(pp, dict), "postprocess", "an object")
        for key, v in pp.items():
            if key not in POSTPROCESS_KEYS:
                c.fail(f"postprocess.{key}", f"unknown post-processing key (known: {', '.join(POSTPROCESS_KEYS)})")
            what = ("one of " + ", ".join(Z_EDGES) if key == "z_edge"
                    else "a number of mm >= 0" if key in _POSTPROCESS_MM else "an integer >= 0")  # fmt: skip
            c.kind(v, _post_value_ok(key, v), f"postprocess.{key}", what)
    if "domain" in card:
        dom = card["domain"]
        c.kind(dom, isinstance(dom, dict), "domain", "an object")
        for key, v in dom.items():
            ok = isinstance(v, str | bool) or _is_num(v) or (isinstance(v, list) and all(isinstance(s, str) for s in v))
            c.kind(v, ok, f"domain.{key}", "a string, number or list of strings")
    _check_screening(card, c)
    return card


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """The validated (and migrated) card ``NAME.json`` of a checkpoint stem or path. A missing file, a file that
    cannot be read (permission), one that is not JSON and one that breaks the schema each get their own message."""
    p = Path(path)
    card_path = p if p.suffix == ".json" else (p.with_suffix("") if p.suffix == ".safetensors" else p)
    card_path = card_path.with_suffix(".json")
    try:
        text = card_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"model card {card_path} not found") from None
    except PermissionError:
        raise CheckpointError(f"model card {card_path} cannot be read: permission denied") from None
    except IsADirectoryError:
        raise CheckpointError(f"model card {card_path} is a folder, not a file") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"model card {card_path} is not a text file (not UTF-8)") from None
    except OSError as exc:
        raise CheckpointError(f"model card {card_path} cannot be read: {exc.strerror or exc}") from None
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"model card {card_path} is not valid JSON: {exc}") from None
    return validate_card(card, f"model card {card_path}")


# --- choices ---------------------------------------------------------------------------------------------------
def eps_range(card: dict) -> tuple[float, float]:
    """The card's calibrated eps range: ``[lo, hi]`` or ``{"eps_max": hi[, "eps_min": lo, "grid": [...]]}``;
    :data:`FALLBACK_EPS_RANGE` when it names none (or a damaged one)."""
    chosen = card.get("chosen") or {}
    rng = card.get("eps_range") or chosen.get("eps_range")
    try:
        if isinstance(rng, dict):
            grid = [float(v) for v in rng.get("grid") or []]
            hi = float(rng.get("eps_max", max(grid) if grid else FALLBACK_EPS_RANGE[1]))
            lo = float(rng.get("eps_min", min(grid) if grid else 0.0))
        elif rng is not None:
            lo, hi = float(rng[0]), float(rng[1])
        else:
            lo, hi = FALLBACK_EPS_RANGE
    except (TypeError, ValueError, IndexError, KeyError):
        lo, hi = FALLBACK_EPS_RANGE
    if not (hi > 0 and math.isfinite(hi)):
        lo, hi = FALLBACK_EPS_RANGE
    return max(min(lo, hi), 0.0), hi


def has_choice(card: dict) -> bool:
    """Whether the card records a validation choice (eps, tau and tau_base), as ``main.py calibrate`` writes."""
    chosen = card.get("chosen") or {}
    return all(_is_num(chosen.get(k)) for k in ("eps", "tau", "tau_base"))


#: which of a card's validation choices to apply: "volume" (``chosen_volume``, made on whole validation
#: volumes, what ``detect`` and the viewer apply to a study; ``chosen`` where the card has none) or "slices"
#: (``chosen``, the paper's per-image choice on abnormal slices, for Table-2-style reports)
TARGETS = ("volume", "slices")


def _chosen_block(card: dict, target: str) -> dict:
    if target not in TARGETS:
        raise OptionError(f"unknown choice target {target!r} (known: {', '.join(TARGETS)})")
    vol = card.get("chosen_volume")
    if target == "volume" and isinstance(vol, dict) and all(_is_num(vol.get(k)) for k in ("eps", "tau", "tau_base")):
        return vol
    return card.get("chosen") or {}


def _chosen_num(card: dict, key: str, target: str = "slices") -> float | None:
    v = _chosen_block(card, target).get(key, card.get(key))
    return float(v) if _is_num(v) else None


def card_choices(card: dict, target: str = "volume") -> dict[str, float]:
    """eps range and (eps, tau, tau_base) chosen on validation, with the fallbacks above; the chosen eps is
    clamped into the range. Keys: ``eps_min``, ``eps_max``, ``eps``, ``tau``, ``tau_base``. ``target``: see
    :data:`TARGETS`. Where each came from: :func:`choice_sources`."""
    lo, hi = eps_range(card)
    eps = _chosen_num(card, "eps", target)
    eps = min(max(FALLBACK_EPS if eps is None else eps, 0.0), hi)
    tau = _chosen_num(card, "tau", target)
    tau = FALLBACK_TAU if tau is None else tau
    tau_base = _chosen_num(card, "tau_base", target)
    tau_base = tau if tau_base is None else tau_base
    return {"eps_min": lo, "eps_max": hi, "eps": eps, "tau": tau, "tau_base": tau_base}


def choice_sources(card: dict, target: str = "volume") -> dict[str, str]:
    """For ``eps``, ``tau`` and ``tau_base`` of :func:`card_choices`: ``"card"`` (``"card (whole volumes)"`` for
    the volume choice), or the fallback used, in words (``detect`` prints these as a note, ``bench speed``
    records them)."""
    ch = card_choices(card, target)
    has = {k: _chosen_num(card, k, target) is not None for k in ("eps", "tau", "tau_base")}
    return {
        "eps": "card" if has["eps"] else f"fallback eps={ch['eps']:g} (the card names none)",
        "tau": "card" if has["tau"] else f"fallback tau={ch['tau']:g} (the card names none)",
        "tau_base": "card" if has["tau_base"] else ("the +MG tau" if has["tau"] else f"fallback tau={ch['tau']:g}"),
    }


def card_validation_dice(card: dict) -> tuple[float, float]:
    """(+MG, base) mean validation Dice of the card's choice; nan where the card has none."""
    mg, base = _chosen_num(card, "val_dice"), _chosen_num(card, "val_dice_base")
    return (math.nan if mg is None else mg, math.nan if base is None else base)


def card_eps_grid(card: dict) -> list[float]:
    """The eps values the card's calibration searched (``eps_range.grid``), inside the range; [] if none."""
    rng = card.get("eps_range")
    lo, hi = eps_range(card)
    try:
        grid = [float(v) for v in (rng.get("grid") or [])] if isinstance(rng, dict) else []
    except (TypeError, ValueError):
        return []
    return sorted(v for v in grid if lo <= v <= hi)


# --- solver ----------------------------------------------------------------------------------------------------
def _solver_from(raw: dict, budget: Any) -> SolverOptions:
    known = {f.name for f in fields(SolverOptions)}
    kwargs = {k: v for k, v in raw.items() if k in known and isinstance(v, int | float | str) and v is not True}
    if _is_int(budget) and budget > 0:
        kwargs["max_steps"] = budget
    return replace(SolverOptions(), **kwargs).validate()


def card_solver(card: dict) -> SolverOptions:
    """The solver the card's (eps, tau) were chosen with: its options and its per-eps step budget
    (``calibration.settings``). Unknown or invalid entries are ignored; without a calibration, the paper's
    solver. The latent scale differs per model (the AE's codes are tens of units apart), so the step budget
    that fits one model does not fit another: the card is the only place that knows."""
    settings = (card.get("calibration") or {}).get("settings") or {}
    raw = settings.get("solver_options")
    if not isinstance(raw, dict):
        return PAPER
    try:
        return _solver_from(raw, settings.get("max_steps"))
    except (TypeError, ValueError, OptionError):  # a damaged card: the faithful default, never a crash
        return PAPER


def solver_for(card: dict, name: str = "card", max_steps: int | None = None) -> tuple[SolverOptions, str | None]:
    """The solver to apply: ``"card"`` (the one the card's eps/tau were chosen with), ``"paper"`` or ``"fast"``,
    with ``max_steps`` replacing the step budget. The second value is a one-line warning when the result is not
    the card's solver (another method, options or step budget): the card's tau was then chosen on different maps."""
    if name not in SOLVER_NAMES:
        raise OptionError(f"unknown solver {name!r}; choose one of {', '.join(SOLVER_NAMES)}")
    own = card_solver(card)
    solver = {"card": own, "paper": PAPER, "fast": FAST}[name]
    if max_steps is not None:
        if max_steps < 0:
            raise OptionError("max_steps must be >= 0")
        solver = replace(solver, max_steps=int(max_steps))
    settings = (card.get("calibration") or {}).get("settings") or {}
    if solver == own or not isinstance(settings.get("solver_options"), dict):
        return solver, None  # the card's own solver, or a card without a calibration (its tau is a fallback)
    return solver, (
        f"the card's eps/tau were chosen on validation with {describe_solver(own)}; applying them with "
        f"{describe_solver(solver)} thresholds a different difference map (recalibrate for this solver)"
    )


def describe_solver(s: SolverOptions) -> str:
    """``spg/bf16, 100 steps`` (``, loss capped at 0.15`` with a capped objective): what distinguishes one solver
    from another in a line."""
    cap = "" if s.loss_cap is None else f", loss capped at {s.loss_cap:g}"
    return f"{s.method}/{s.precision}, {s.max_steps} steps{cap}"


def card_channels_last(card: dict) -> bool:
    """Whether the card's choices were made with the model in channels_last layout (``calibration.settings``;
    calibrations with the fast solver use it). Applying the choice in the same layout gives the same rounding,
    and on CPUs the faster convolution kernels."""
    settings = (card.get("calibration") or {}).get("settings") or {}
    value = settings.get("channels_last", settings.get("solver") == "fast")
    return value is True


# --- the rest --------------------------------------------------------------------------------------------------
def card_postprocess(card: dict) -> dict[str, int | float | str]:
    """The card's post-processing (``postprocess``: ``median_size``, ``erode_px``, ``min_component_px``, ``z_mm``,
    ``z_edge``), only the keys it sets with valid values; {} when none (then the maps are not post-processed beyond
    the foreground)."""
    pp = card.get("postprocess")
    if not isinstance(pp, dict):
        return {}
    return {
        k: v if k == "z_edge" else float(v) if k in _POSTPROCESS_MM else int(v)
        for k, v in pp.items()
        if k in POSTPROCESS_KEYS and _post_value_ok(k, v)
    }


def card_eps_reference_area(card: dict) -> float | None:
    """``eps_scaling.reference_area_px``: the foreground area (pixels at the model's size) at which the card's eps
    applies as it is; each slice is then solved at eps * sqrt(its area / this) (``Detector``, docs/bench/eps-area/).
    None when the card has none or an invalid one: one eps for every slice, as in the paper."""
    es = card.get("eps_scaling")
    v = es.get("reference_area_px") if isinstance(es, dict) else None
    if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v > 0):
        return None
    return float(v)


def card_domain(card: dict) -> dict[str, Any]:
    """What the model is for (``domain``: e.g. ``{"modality": "MR", "anatomy": "brain", "sequence": "T1"}``);
    {} when the card says nothing."""
    dom = card.get("domain")
    return dict(dom) if isinstance(dom, dict) else {}


def card_screening_mode(card: dict | None) -> str:
    """The mode ``batch`` runs by default for this model: ``"base"`` where the card's ``screening.mode`` says so
    (chosen on validation: its base map screens whole studies better than MatchGen, docs/batch.md), else ``"mg"``.
    ``detect`` and the viewer always start with MatchGen."""
    sc = (card or {}).get("screening")
    mode = sc.get("mode") if isinstance(sc, dict) else None
    return mode if mode in SCREENING_MODES else "mg"


def card_screening(card: dict | None) -> dict[str, Any]:
    """What ``batch`` runs by default for this model: ``mode`` (:func:`card_screening_mode`), and for the base
    mode the card's screening detection where it has one: ``tau`` (the outline, D > tau; None: the card's
    ``tau_base``) and ``report_above`` (a finding is reported only when its highest D exceeds it; None: every
    finding). Chosen on validation studies (docs/bench/screening-cut/rule.md)."""
    mode = card_screening_mode(card)
    sc = (card or {}).get("screening")
    sc = sc if isinstance(sc, dict) and mode == "base" else {}
    return {"mode": mode, "tau": sc.get("tau"), "report_above": sc.get("report_above")}


def card_screening_outline(card: dict) -> float:
    """The tau at which a plain ``batch`` outlines the base map's findings: the screening detection's own ``tau``
    (:func:`card_screening`), else the card's ``tau_base`` (:func:`card_choices`)."""
    tau = card_screening(card)["tau"]
    return float(tau) if tau is not None else float(card_choices(card)["tau_base"])


def card_batch_detection(card: dict, mg: bool = False) -> dict[str, Any]:
    """The detection a plain ``batch`` runs with this card (``mg``: the one ``batch --mg`` runs): the screening
    detection of the base map where the card's screening mode is base (``eps`` 0, ``tau`` its outline,
    ``report_above`` its cut), else MatchGen at the card's whole-volume choice with every finding reported. Keys:
    ``base_only``, ``eps``, ``tau``, ``report_above``, ``label`` (in words, for reports)."""
    sc = card_screening(card)
    if sc["mode"] == "base" and not mg:
        tau = card_screening_outline(card)
        cut = sc["report_above"]
        label = f"base map, findings outlined at D > {tau:.4g}" + (
            f" and reported above peak D {cut:.4g}" if cut is not None else ""
        )
        return {"base_only": True, "eps": 0.0, "tau": tau, "report_above": cut, "label": label}
    ch = card_choices(card)
    label = f"+MG, eps {ch['eps']:.4g}, tau {ch['tau']:.4g}"
    return {"base_only": False, "eps": ch["eps"], "tau": ch["tau"], "report_above": None, "label": label}


def card_training(card: dict) -> dict[str, Any]:
    """The training facts reports copy (epochs, seconds, data folder, final validation loss), from the migrated
    schema's ``training`` (v1 flat copies included)."""
    c = migrate_card(card) if card.get("card_version", 1) != CARD_VERSION else card
    tr = c.get("training") or {}
    out = {
        "epochs": tr.get("epochs"),
        "train_seconds": tr.get("training_time_s"),
        "data": tr.get("data_dir"),
        "val_loss": c.get("final_val_loss"),
    }
    return {k: v for k, v in out.items() if v is not None}
