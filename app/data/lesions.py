"""Synthetic lesions inserted into real normal images, with the mask of what was changed.

Real pathology with pixel masks cannot be had offline (../shared/DATA.md), so the abnormal validation/test
images are made as in the MOOD 2020 benchmark: a real held-out scan plus inserted anomalies. Each lesion is

- a smooth irregular blob: an ellipsoid of random axes and orientation whose radius is modulated by smooth
  noise, 3-30 mm across by default, with a soft (logistic) edge a fraction of a mm to 1.5 mm wide;
- inside the brain (the blob is multiplied by the brain mask, centres are at least 0.6 radius deep);
- one of several kinds: ``bright`` / ``dark`` (the local mean moved by 15-45 % of the brain's robust intensity
  range, with smooth internal heterogeneity), ``cavity`` (resection-like: CSF-dark, sharper edge),
  ``foreign`` (tissue copied from elsewhere in the brain, flipped), ``mirror`` (the region mirrored onto itself);
- painted onto the low-pass part of the image only, so the original noise texture stays (new = x + a*(t - lowpass(x)));
- optionally with mass effect: surrounding tissue pushed radially outward by up to 30 % of the radius.

The mask is the blob's voxels with blend weight >= 0.5; a lesion whose mean change over its mask is below 8 % of
the intensity range (e.g. a dark lesion drawn into CSF) is redrawn elsewhere. Everything is seeded by the
``numpy.random.Generator`` passed in. Works in 2D and 3D (``spacing`` gives the axes' voxel sizes in mm).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

KINDS = ("bright", "dark", "cavity", "foreign", "mirror")
DEFAULT_WEIGHTS = {"bright": 0.35, "dark": 0.3, "cavity": 0.12, "foreign": 0.13, "mirror": 0.1}
MIN_CHANGE = 0.08  # of the brain's robust intensity range, mean over the mask


@dataclass
class Lesion:
    kind: str
    centre: tuple[int, ...]
    radius_mm: float
    contrast: float  # signed change relative to the robust range (bright/dark/cavity); 0 for copied tissue
    mass_effect_mm: float
    voxels: int
    mean_change: float  # mean |new - old| over the mask, in image units

    def to_dict(self) -> dict:
        return asdict(self)


def _smooth_noise(shape, sigma_vox, rng) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="reflect")
    s = float(n.std())
    return n / s if s > 0 else n


def _random_rotation(ndim: int, rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    return q * np.sign(np.diag(r))


def _box(centre, half_vox, shape):
    return tuple(slice(max(0, c - h), min(s, c + h + 1)) for c, h, s in zip(centre, half_vox, shape, strict=True))


def _blob(box_shape, centre_in_box, radius_mm, spacing, edge_mm, irregularity, rng) -> np.ndarray:
    """Soft blob weights in [0, 1] on a local box."""
    nd = len(box_shape)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in box_shape], indexing="ij")
    pos = np.stack([(g - c) * s for g, c, s in zip(grids, centre_in_box, spacing, strict=True)], axis=-1)
    rot = _random_rotation(nd, rng).astype(np.float32)
    axes = rng.uniform(0.7, 1.3, size=nd).astype(np.float32)
    local = pos @ rot / (axes * radius_mm)
    rho = np.sqrt((local**2).sum(-1))
    sigma_vox = [max(0.8, 0.45 * radius_mm / s) for s in spacing]
    rho = rho * (1.0 + irregularity * _smooth_noise(box_shape, sigma_vox, rng))
    dist_mm = (rho - 1.0) * radius_mm
    alpha = 1.0 / (1.0 + np.exp(np.clip(dist_mm / max(edge_mm, 1e-3) * 4.0, -40, 40)))
    alpha[alpha < 0.02] = 0.0
    return alpha.astype(np.float32)


def _mass_effect(patch, centre_in_box, radius_mm, strength_mm, spacing) -> np.ndarray:
    """Push tissue radially outward: new(x) = old(x - u(x)), |u| = strength * r/R * exp(-(r/2R)^2)."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in patch.shape], indexing="ij")
    d = [(g - c) * s for g, c, s in zip(grids, centre_in_box, spacing, strict=True)]
    r = np.sqrt(sum(x**2 for x in d)) + 1e-6
    mag = strength_mm * (r / radius_mm) * np.exp(-((r / (2.0 * radius_mm)) ** 2)) / np.exp(-0.25)
    mag = np.minimum(mag, r)  # never pull from beyond the centre
    coords = [g - mag * x / r / s for g, x, s in zip(grids, d, spacing, strict=True)]
    return ndimage.map_coordinates(patch, coords, order=1, mode="nearest").astype(np.float32)


def insert_lesions(
    volume: np.ndarray,
    brain: np.ndarray,
    spacing,
    rng: np.random.Generator,
    n_lesions: int = 3,
    radius_mm: tuple[float, float] = (1.5, 15.0),
    kinds: dict[str, float] | None = None,
    mass_effect_prob: float = 0.3,
    centre_region: np.ndarray | None = None,
    labels_out: np.ndarray | None = None,
    ids_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[Lesion]]:
    """Insert ``n_lesions`` lesions; returns (new volume, bool mask, lesion records). ``centre_region``
    (bool, like ``brain``) restricts where centres may lie (e.g. a block of slices). ``labels_out`` (optional,
    integer array like ``volume``) receives ``1 + KINDS.index(kind)`` on each lesion's mask voxels (a later
    lesion overwrites an earlier one, as its paint does); ``ids_out`` likewise receives the lesion's number, 1 for
    the first one inserted (the index of its record + 1), so a lesion whose mask falls in pieces is still one lesion.
    Neither draws anything from ``rng``."""
    vol = np.asarray(volume, dtype=np.float32).copy()
    brain = np.asarray(brain, dtype=bool)
    spacing = tuple(float(s) for s in spacing)
    if vol.shape != brain.shape or len(spacing) != vol.ndim:
        raise ValueError("volume, brain mask and spacing must agree in shape/dimension")
    mask = np.zeros(vol.shape, dtype=bool)
    vals = vol[brain]
    p1, p2, p99, p995 = (float(v) for v in np.percentile(vals, [1, 2, 99, 99.5]))
    rng_range = max(p99 - p1, 1e-6)
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    brain_soft = ndimage.gaussian_filter(brain.astype(np.float32), [0.7 / s for s in spacing])
    weights = kinds or DEFAULT_WEIGHTS
    names = list(weights)
    probs = np.array([weights[k] for k in names], dtype=np.float64)
    probs /= probs.sum()
    lesions: list[Lesion] = []
    allowed = brain if centre_region is None else brain & centre_region
    for _ in range(n_lesions):
        for _attempt in range(12):
            kind = str(rng.choice(names, p=probs))
            r = float(np.exp(rng.uniform(np.log(radius_mm[0]), np.log(radius_mm[1]))))
            cand = np.flatnonzero((depth >= 0.6 * r) & allowed & ~mask)
            if cand.size == 0:
                cand = np.flatnonzero(allowed & ~mask & (depth >= min(2.0, 0.6 * r)))
                r = min(r, max(1.5, float(depth.flat[cand].max()) if cand.size else 1.5))
            if cand.size == 0:
                break
            centre = np.unravel_index(int(rng.choice(cand)), vol.shape)
            me = float(rng.uniform(0.15, 0.3) * r) if (rng.random() < mass_effect_prob and r >= 4) else 0.0
            half = [int(np.ceil((2.0 * r + 2 * me + 3) / s)) for s in spacing]
            box = _box(centre, half, vol.shape)
            cib = [c - b.start for c, b in zip(centre, box, strict=True)]
            bshape = tuple(b.stop - b.start for b in box)
            edge = float(rng.uniform(0.2, 0.5)) if kind == "cavity" else float(rng.uniform(0.5, 1.5))
            alpha = _blob(bshape, cib, r, spacing, edge, float(rng.uniform(0.12, 0.35)), rng) * brain_soft[box]
            region = alpha >= 0.5
            if not region.any():
                continue
            # no change beyond the soft edge around the mask (noise can leave faint islands elsewhere)
            reach = max(1, int(np.ceil(1.5 * edge / min(spacing))))
            alpha = np.where(ndimage.binary_dilation(region, iterations=reach), alpha, 0.0).astype(np.float32)
            old = vol[box]
            base = _mass_effect(old, cib, r, me, spacing) if me > 0 else old.copy()
            base = np.where(brain[box], base, old)
            low = ndimage.gaussian_filter(base, [1.0 / max(1.0, s) for s in spacing])
            contrast = 0.0
            if kind in ("bright", "dark", "cavity"):
                local_mean = float(low[region].mean())
                if kind == "bright":
                    contrast = float(rng.uniform(0.15, 0.45))
                    target = min(local_mean + contrast * rng_range, p995 * 1.15)
                elif kind == "dark":
                    contrast = -float(rng.uniform(0.15, 0.45))
                    target = max(local_mean + contrast * rng_range, 0.5 * p1)
                else:
                    target = p2
                    contrast = (target - local_mean) / rng_range
                hetero = 1.0 + 0.08 * _smooth_noise(bshape, [max(0.8, 1.5 / s) for s in spacing], rng)
                new = base + alpha * (target * hetero - low)
            else:
                if kind == "foreign":
                    src = _foreign_patch(vol, brain, bshape, spacing, centre, r, rng)
                    if src is None:
                        continue
                else:  # mirror the region onto itself along a random in-plane axis
                    src = np.flip(base, axis=int(rng.integers(0, min(2, vol.ndim))))
                new = base * (1.0 - alpha) + alpha * src
            new = np.where(brain[box], new, old).astype(np.float32)
            change = float(np.abs(new - old)[region].mean())
            if change < MIN_CHANGE * rng_range:
                continue
            vol[box] = new
            mask[box] |= region & brain[box]
            if labels_out is not None:
                labels_out[box][region & brain[box]] = KINDS.index(kind) + 1
            if ids_out is not None:
                ids_out[box][region & brain[box]] = len(lesions) + 1
            lesions.append(Lesion(kind, tuple(int(c) for c in centre), r, contrast, me, int(region.sum()), change))
            break
    return vol, mask, lesions


def _foreign_patch(vol, brain, bshape, spacing, centre, r, rng):
    """A same-sized patch of brain from at least 4 radii away, flipped: plausible tissue in the wrong place."""
    far = np.ones(vol.shape, dtype=bool)
    far[_box(centre, [int(np.ceil(4 * r / s)) for s in spacing], vol.shape)] = False
    half = [n // 2 for n in bshape]
    inner = np.zeros(vol.shape, dtype=bool)
    inner[tuple(slice(h, s - (n - h - 1)) for h, s, n in zip(half, vol.shape, bshape, strict=True))] = True
    cand = np.flatnonzero(brain & far & inner)
    if cand.size == 0:
        return None
    c = np.unravel_index(int(rng.choice(cand)), vol.shape)
    sl = tuple(slice(ci - h, ci - h + n) for ci, h, n in zip(c, half, bshape, strict=True))
    patch = vol[sl]
    if patch.shape != tuple(bshape):
        return None
    return np.flip(patch, axis=int(rng.integers(0, vol.ndim))).astype(np.float32)
