"""The model zoo in ``models/``: listing, name resolution and the default model (named here, in one place)."""

from __future__ import annotations

from pathlib import Path

from app.bundled import bundled_dir
from app.errors import CheckpointError

#: the zoo folder (``models/``; MATCHGEN_MODELS overrides it), found by :mod:`app.bundled`
MODELS_DIR = bundled_dir("models")

#: the model ``python main.py``, ``detect`` and ``batch`` use when none is named: the zoo's best + MG Dice on the
#: validation volumes (the cards' ``chosen_volume``, every card chosen on the same 16). That is the ensemble card
#: ``dae+ae-l1`` (24.0 %; app.core.ensemble: the dae's and the ae-l1's scaled maps averaged), ahead of its members
#: and the single models (dae 21.9 % with its z window, vae-grad 17.4, vae 17.2, ce-ae 16.2, ganomaly 15.3, ae-l1
#: 15.2, ddgan lower), and on 32 validation volumes that chose nothing 32.7 against the dae's 29.6 % (+3.1
#: [+1.1, +5.5]; docs/models.md, "An ensemble of two models' maps"). It was held back while a volume cost 0.204 s
#: per slice with it (goal 0.2); with 16-slice batches and the U-Net's skips joined in bfloat16 it costs 0.181
#: against the dae's 0.159 s, back to back, and every ``bench speed`` goal the dae meets it meets
#: (docs/bench/speed-default/).
DEFAULT_MODEL = "dae+ae-l1"


def list_ensembles(models_dir: Path | None = None) -> list[str]:
    """Ensemble cards in the zoo folder (``family: "ensemble"``, no weights of their own: app.core.ensemble)."""
    from app.nets.card import is_ensemble_card, read_raw_card

    d = Path(models_dir or MODELS_DIR)
    return [p.stem for p in sorted(d.glob("*.json")) if is_ensemble_card(read_raw_card(p))] if d.is_dir() else []


def list_models(models_dir: Path | None = None) -> list[str]:
    d = Path(models_dir or MODELS_DIR)
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.json") if p.with_suffix(".safetensors").is_file())


def resolve_model(name: str | None, models_dir: Path | None = None) -> Path:
    """A model name from the zoo, or a path to a checkpoint (with or without suffix), to its stem."""
    name = name or DEFAULT_MODEL
    p = Path(name)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    if p.with_suffix(".json").is_file():
        return p
    d = Path(models_dir or MODELS_DIR)
    cand = d / name
    if cand.with_suffix(".json").is_file():
        return cand
    known = ", ".join(list_models(d)) or "none"
    raise CheckpointError(f"model {name!r} not found (models in {d}: {known})")
