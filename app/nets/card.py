"""Reading a model card's validation calibration: the eps range, the (eps, tau) chosen on validation, and the
solver those choices were made with. ``detect``, the viewer and the figures all start from these, so a choice
made on validation is applied the way it was made (same solver, same step budget).

Cards without a calibration fall back to documented defaults: eps range [0, 0.6] (the paper's), eps 0.1,
tau 0.2, and the paper-faithful solver (penalty method, Adam lr 1e-3).
"""

from __future__ import annotations

from dataclasses import fields, replace

from app.core.matchgen import SolverOptions
from app.errors import OptionError

#: eps range and (eps, tau) used when a model card does not name them (DESIGN.md: eps in [0, 0.6])
FALLBACK_EPS_RANGE = (0.0, 0.6)
FALLBACK_EPS = 0.1
FALLBACK_TAU = 0.2


def eps_range(card: dict) -> tuple[float, float]:
    """The card's calibrated eps range: ``[lo, hi]`` or ``{"eps_max": hi[, "eps_min": lo, "grid": [...]]}``."""
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
    if not (hi > 0 and hi == hi and hi != float("inf")):
        lo, hi = FALLBACK_EPS_RANGE
    return max(min(lo, hi), 0.0), hi


def card_choices(card: dict, target: str = "volume") -> dict[str, float]:
    """eps range and (eps, tau) chosen on validation, with the fallbacks above; the chosen eps is clamped into
    the range. ``target="volume"`` (what ``detect`` and the viewer apply): the choice made on whole validation
    volumes (``chosen_volume``) where the card has one, else the per-slice choice; ``target="slices"``: the
    paper's per-image choice (``chosen``), for Table-2-style reports."""
    if target not in ("volume", "slices"):
        raise OptionError(f"unknown choice target {target!r}")
    chosen = card.get("chosen") or {}
    if target == "volume" and isinstance(card.get("chosen_volume"), dict):
        chosen = card["chosen_volume"]
    lo, hi = eps_range(card)

    def num(key: str, default: float) -> float:
        v = chosen.get(key, card.get(key, default))
        try:
            v = float(v)
        except (TypeError, ValueError):
            return default
        return v if v == v else default

    eps = min(max(num("eps", FALLBACK_EPS), 0.0), hi)
    tau = num("tau", FALLBACK_TAU)
    tau_base = num("tau_base", tau)
    return {"eps_min": lo, "eps_max": hi, "eps": eps, "tau": tau, "tau_base": tau_base}


def card_eps_grid(card: dict) -> list[float]:
    """The eps values the card's calibration searched (``eps_range.grid``), inside the range; [] if none."""
    rng = card.get("eps_range")
    lo, hi = eps_range(card)
    try:
        grid = [float(v) for v in (rng.get("grid") or [])] if isinstance(rng, dict) else []
    except (TypeError, ValueError):
        return []
    return sorted(v for v in grid if lo <= v <= hi)


def card_solver(card: dict) -> SolverOptions:
    """The solver the card's (eps, tau) were chosen with: its options and its per-eps step budget
    (``calibration.settings``). Unknown or invalid entries are ignored; without a calibration, the paper's
    solver. The latent scale differs per model (the AE's codes are tens of units apart), so the step budget
    that fits one model does not fit another: the card is the only place that knows."""
    settings = (card.get("calibration") or {}).get("settings") or {}
    raw = settings.get("solver_options")
    if not isinstance(raw, dict):
        return SolverOptions()
    known = {f.name for f in fields(SolverOptions)}
    kwargs = {k: v for k, v in raw.items() if k in known and isinstance(v, (int, float, str)) and v is not True}
    budget = settings.get("max_steps")
    if isinstance(budget, int) and budget > 0:
        kwargs["max_steps"] = budget
    try:
        return replace(SolverOptions(), **kwargs).validate()
    except (TypeError, ValueError, OptionError):  # a damaged card: the faithful default, never a crash
        return SolverOptions()


def card_channels_last(card: dict) -> bool:
    """Whether the card's choices were made with the model in channels_last layout (``calibration.settings``;
    calibrations with the fast solver use it). Applying the choice in the same layout gives the same rounding,
    and on CPUs the faster convolution kernels."""
    settings = (card.get("calibration") or {}).get("settings") or {}
    value = settings.get("channels_last", settings.get("solver") == "fast")
    return value is True


#: the post-processing keys a card's ``postprocess`` may set (app.core.detector.PostProcessing)
POSTPROCESS_KEYS = ("median_size", "erode_px", "min_component_px")


def card_postprocess(card: dict) -> dict[str, int]:
    """The post-processing chosen on validation (``postprocess``), applied to base and +MG alike; missing or
    invalid entries are 0 (off)."""
    raw = card.get("postprocess") or {}
    out = {}
    for k in POSTPROCESS_KEYS:
        v = raw.get(k, 0) if isinstance(raw, dict) else 0
        out[k] = int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0
    return out
