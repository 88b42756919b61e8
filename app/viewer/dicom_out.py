"""What the viewer writes into a DICOM SEG's algorithm identification (the same fields ``detect`` writes)."""

from __future__ import annotations

from pathlib import Path

from app.io.seg import AlgorithmInfo, card_sha256


def session_algorithm(session, eps: float, tau: float) -> AlgorithmInfo:
    """The algorithm identification of a viewer result (a :class:`app.viewer.compute.ModelSession`: its model
    name or checkpoint path, card and network), as ``detect`` writes it."""
    from app import __version__

    name = str(getattr(session, "name", "") or "unknown")
    family = ""
    model = getattr(getattr(session, "detector", None), "model", None)
    if model is not None and getattr(model, "config", None) is not None:
        family = str(model.config.family)
    card = getattr(session, "card", None) or {}
    family = family or str(card.get("family", "") or "")
    card_file = None
    try:
        from app.nets.zoo import resolve_model

        card_file = resolve_model(name).with_suffix(".json")
    except Exception:  # noqa: BLE001 - a model loaded from elsewhere: no hash
        card_file = None
    return AlgorithmInfo(
        model=Path(name).name,
        family=family or "unknown",
        card_sha256=card_sha256(card_file),
        eps=float(eps),
        tau=float(tau),
        version=__version__,
        base_only=float(eps) == 0.0,
    )
