"""Optimizer state as safetensors (never pickle): tensors flattened to ``opt.<name>.<param>.<key>``, the param
groups (plain numbers) as JSON in the metadata, next to a small JSON record of the training progress, the last
epoch's weights (``model.<key>``) and, while another epoch is the best so far, that epoch's (``best.<key>``). With
early stopping the checkpoint holds the best epoch's weights, so a resumed run needs the last epoch's to go on from
where it stopped, and the best epoch's to ship them should it stay the best."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from app.atomic import atomic_write
from app.errors import CheckpointError


def _flatten(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            k = f"opt.{name}.{pid}.{key}"
            if isinstance(val, torch.Tensor):
                tensors[k] = val.detach().cpu().contiguous()
            else:
                scalars[k] = val
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"groups": groups, "scalars": scalars}


def save_train_state(
    path: str | os.PathLike, optimizers: dict[str, torch.optim.Optimizer], info: dict,
    weights: dict[str, torch.Tensor] | None = None, best_weights: dict[str, torch.Tensor] | None = None,
) -> None:  # fmt: skip
    tensors: dict[str, torch.Tensor] = {}
    for prefix, w in (("model", weights), ("best", best_weights)):
        tensors.update({f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in (w or {}).items()})
    meta: dict[str, Any] = {"info": info, "optimizers": {}}
    for name, opt in optimizers.items():
        t, m = _flatten(name, opt)
        tensors.update(t)
        meta["optimizers"][name] = m
    text = json.dumps(meta, default=float)
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata={"state": text}))


def load_train_state(path: str | os.PathLike, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore the optimizers in place; returns the saved ``info``."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["state"])
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"training state {path} cannot be read: {exc}") from None
    for name, opt in optimizers.items():
        m = meta["optimizers"].get(name)
        if m is None:
            raise CheckpointError(f"training state {path} has no optimizer {name!r}")
        state: dict[int, dict[str, Any]] = {}
        prefix = f"opt.{name}."
        for k, v in tensors.items():
            if k.startswith(prefix):
                pid, key = k[len(prefix) :].split(".", 1)
                state.setdefault(int(pid), {})[key] = v
        for k, v in m["scalars"].items():
            pid, key = k[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[key] = v
        groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in m["groups"]]
        try:
            opt.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"training state {path} does not fit this model: {exc}") from None
    return meta["info"]


def train_state_weights(path: str | os.PathLike) -> tuple[dict | None, dict | None]:
    """(the last epoch's weights, the best epoch's where it is not the last) saved with the training state; None
    for what it does not hold (a state saved before weights were kept in it)."""
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"training state {path} cannot be read: {exc}") from None
    out = []
    for prefix in ("model.", "best."):
        w = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        out.append(w or None)
    return out[0], out[1]
