"""Small synthetic studies and tiny models for the viewer and figure tests (built in tmp_path, never shipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_volume(shape=(40, 48, 6), seed=0):
    """An MR-like head: an ellipse of textured tissue with a bright lesion in slices 2-4 and its mask."""
    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    xx, yy = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    head = ((xx - X / 2) / (X * 0.42)) ** 2 + ((yy - Y / 2) / (Y * 0.42)) ** 2 <= 1
    vol = np.zeros(shape, np.float32)
    mask = np.zeros(shape, np.uint8)
    for z in range(Z):
        vol[:, :, z] = head * (300 + 40 * rng.standard_normal((X, Y)))
    lesion = ((xx - X * 0.6) ** 2 + (yy - Y * 0.4) ** 2) <= (min(X, Y) * 0.12) ** 2
    for z in range(2, min(5, Z)):
        vol[:, :, z][lesion] += 500
        mask[:, :, z][lesion] = 1
    return np.clip(vol, 0, None), mask


def write_study(dirpath: Path, shape=(40, 48, 6)) -> tuple[Path, Path]:
    import nibabel as nib

    vol, mask = make_volume(shape)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    dirpath.mkdir(parents=True, exist_ok=True)
    study, gt = dirpath / "head.nii.gz", dirpath / "head_mask.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(study))
    nib.save(nib.Nifti1Image(mask, affine), str(gt))
    return study, gt


def write_model(models_dir: Path, name: str = "tiny", seed: int = 0, size: int = 32) -> Path:
    """A tiny untrained AE-l1 checkpoint with a card naming its eps range and chosen eps/tau."""
    import torch

    from app.nets import ModelConfig, create_model
    from app.nets.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = create_model(ModelConfig("ae-l1", image_size=size, latent_dim=8, width=4)).freeze()
    card = {"eps_range": [0.0, 0.5], "chosen": {"eps": 0.2, "tau": 0.15, "tau_base": 0.2}}
    return save_checkpoint(model, models_dir / name, card)


def write_ensemble(path: Path, members: list[tuple[str, float]], *, eps: float, tau: float, tau_base: float,
                   post: dict | None = None) -> Path:  # fmt: skip
    """An ensemble card (app.core.ensemble) at ``path`` over saved models: (model name or stem path, scale) pairs,
    each member at ``eps`` with the same scale for + MG and base; ``post`` defaults to none at all."""
    import json

    from app.core.ensemble import file_sha256
    from app.nets.zoo import resolve_model

    ms = [{"model": str(name), "card_sha256": file_sha256(resolve_model(str(name), path.parent).with_suffix(".json")),
           "eps": eps, "scale_mg": scale, "scale_base": scale} for name, scale in members]  # fmt: skip
    post = {"median_size": 0, "erode_px": 0, "min_component_px": 0, "z_mm": 0.0, **(post or {})}
    card = {"name": path.stem, "family": "ensemble", "members": ms, "eps_range": {"eps_min": 0.0, "eps_max": 1.0},
            "postprocess": post, "chosen_volume": {"eps": 1.0, "tau": tau, "tau_base": tau_base}}  # fmt: skip
    path.write_text(json.dumps(card))
    return path
