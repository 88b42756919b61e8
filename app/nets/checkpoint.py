"""Checkpoints: ``NAME.safetensors`` (weights, plus the config in the safetensors metadata) and ``NAME.json``
(the model card: family, config, training data and command, losses, eps range, eps/tau chosen on validation).

Loading never unpickles anything: safetensors holds raw tensors and JSON holds the rest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from app.atomic import atomic_write, atomic_write_text
from app.errors import CheckpointError
from app.nets.base import AnomalyModel, ModelConfig
from app.nets.card import CARD_VERSION, read_card, validate_card
from app.nets.registry import create_model


def stem_of(path: str | os.PathLike) -> Path:
    """``models/x``, ``models/x.json`` and ``models/x.safetensors`` all name the checkpoint ``models/x``."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p


def save_checkpoint(model: AnomalyModel, path: str | os.PathLike, card: dict[str, Any] | None = None) -> Path:
    """Write weights and card atomically; returns the stem."""
    stem = stem_of(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    cfg = model.config.to_dict()
    meta = {"family": model.config.family, "config": json.dumps(cfg), "card_version": str(CARD_VERSION)}
    atomic_write(stem.with_suffix(".safetensors"), lambda tmp: save_file(state, tmp, metadata=meta))
    full_card = {"name": stem.name, "family": model.config.family, "config": cfg, **(card or {})}
    full_card["card_version"] = full_card.get("card_version", CARD_VERSION)
    full_card = validate_card(json.loads(json.dumps(full_card, default=str)), f"model card {stem.name}")
    write_card(stem, full_card)
    return stem


def write_card(path: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Write a (validated) card atomically as ``STEM.json``, with the umask's permissions."""
    path = stem_of(path).with_suffix(".json")
    text = json.dumps(validate_card(card, f"model card {path}"), indent=2, sort_keys=False, default=str) + "\n"
    atomic_write_text(path, text)
    return path


def load_checkpoint(
    path: str | os.PathLike, device: torch.device | str = "cpu", expect_family: str | None = None
) -> tuple[AnomalyModel, dict[str, Any]]:
    """Rebuild a model from its card and weights, frozen in eval mode. Raises CheckpointError with a readable
    message for a missing, corrupt or mismatched checkpoint."""
    stem = stem_of(path)
    card = read_card(stem)
    config = ModelConfig.from_dict(card["config"])
    if expect_family is not None and config.family != expect_family:
        raise CheckpointError(f"checkpoint {stem.name} is a {config.family!r} model, not {expect_family!r}")
    weights = stem.with_suffix(".safetensors")
    if not weights.is_file():
        raise CheckpointError(f"weights {weights} not found")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"weights {weights.name} cannot be read (not a safetensors file?): {exc}") from None
    model = create_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
        raise CheckpointError(
            f"weights {weights.name} do not fit a {config.family!r} model with this config ({first})"
        ) from None
    return model.to(device).freeze(), card
