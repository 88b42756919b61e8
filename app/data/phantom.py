"""A small synthetic brain-like phantom (ellipsoid "brain" with a darker "ventricle" and smooth texture), for
tests and examples that must not depend on downloaded data."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def brain_phantom(shape=(40, 48, 36), seed: int = 0, background: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(volume float32 in about [0, 120], brain mask bool) on a RAS grid of ``shape``."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) if n > 1 else np.zeros(1) for n in shape], indexing="ij")
    r = np.sqrt(sum((g / a) ** 2 for g, a in zip(grids, (0.8, 0.9, 0.8), strict=True)))
    brain = r < 1.0
    vent = np.sqrt(sum((g / a) ** 2 for g, a in zip(grids, (0.2, 0.35, 0.25), strict=True))) < 1.0
    tex = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    tex /= tex.std()
    vol = np.where(brain, 90.0 + 8.0 * tex + 2.0 * rng.standard_normal(shape), background)
    vol = np.where(vent, 30.0 + 2.0 * rng.standard_normal(shape), vol)
    return np.clip(vol, 0, None).astype(np.float32), brain
