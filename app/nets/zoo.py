"""The model zoo in ``models/``: listing, name resolution and the default model (named here, in one place)."""

from __future__ import annotations

from pathlib import Path

from app.bundled import bundled_dir
from app.errors import CheckpointError

#: the zoo folder (``models/``; MATCHGEN_MODELS overrides it), found by :mod:`app.bundled`
MODELS_DIR = bundled_dir("models")

#: the model ``python main.py`` and ``detect`` use when none is named: the zoo's best +MG Dice on the validation
#: volumes (the cards' ``chosen_volume``, every card chosen on the same 16: dae 21.9 % with its z window, vae-grad
#: 17.4, vae 17.2, ce-ae 16.2, ganomaly 15.3, ae-l1 15.2, ddgan lower); on validation volumes that chose nothing
#: the dae + MG is also the best (seeds 1016-1047; docs/models.md, docs/bench/widths/rule.md, docs/bench/zmean/).
#: The ensemble card ``dae+ae-l1`` scores higher on validation volumes (24.0 % on the same 16, 32.7 against 29.6 %
#: on 32 fresh ones) but is not the default: a volume costs 0.204 s per slice with it against the dae's 0.178 s in
#: ``bench speed``, over the 0.2 s goal, and ``bench quality`` cannot run it yet (docs/models.md, "An ensemble of
#: two models' maps").
DEFAULT_MODEL = "dae"


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
