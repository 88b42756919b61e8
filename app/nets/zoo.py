"""The model zoo in ``models/``: listing, name resolution and the default model (named here, in one place)."""

from __future__ import annotations

from pathlib import Path

from app.bundled import bundled_dir
from app.errors import CheckpointError

#: the zoo folder (``models/``; MATCHGEN_MODELS overrides it), found by :mod:`app.bundled`
MODELS_DIR = bundled_dir("models")

#: the model ``python main.py``, ``detect`` and ``batch`` use when none is named: the zoo's best + MG Dice on
#: validation volumes (the cards' ``chosen_volume``), or a cheaper operator of it judged not worse by a rule
#: committed before the runs. Since 2026-12-06 that is the ensemble card ``dae+dae-cover-base+ae-l1``
#: (app.core.ensemble: the dae's and the ae-l1's + MG maps and the blob-noise dae's base map, scaled and averaged;
#: 32.1 % on the sixteen choosing volumes of the interleaved layout). It is ``dae+dae-cover+ae-l1`` (32.1 % there
#: too; on 48 validation volumes that chose nothing, 32.7 against 26.3 % for ``dae+ae-l1``: docs/bench/cover-ensemble/)
#: with the blob-noise dae's solver left out: on 48 further validation volumes -0.2 [-0.5, +0.0] points against it
#: (the rule's margin: -1), at 0.26 against 0.56 s per slice of a volume (docs/bench/cover-base/; docs/models.md,
#: "A cheaper third member"). Both ensembles and ``dae+ae-l1`` (24.0 % on the middle layout's sixteen, ahead of
#: every single model: dae 21.9 %, vae-grad 17.4, vae 17.2, ce-ae 16.2, ganomaly 15.3, ae-l1 15.2, ddgan lower)
#: stay in the zoo.
DEFAULT_MODEL = "dae+dae-cover-base+ae-l1"


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


def zoo_names(models_dir: Path | None = None) -> list[str]:
    """Every name the zoo folder answers to: the models with weights, then the ensemble cards over them (the default
    model among them)."""
    return list_models(models_dir) + list_ensembles(models_dir)


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
    known = ", ".join(zoo_names(d)) or "none"
    raise CheckpointError(f"model {name!r} not found (models in {d}: {known})")
