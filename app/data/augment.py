"""Augmentation of normal training volumes, in study space (before normalisation and slicing), so augmented
slices take exactly the path of real studies: random resampling onto a new grid (voxel size 1-2 mm in-plane,
1-3 mm between slices, like clinical scans), a small rotation and anisotropic scaling, a smooth elastic
displacement of a few mm, a multiplicative bias field, a gamma change and a little noise inside the brain.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _coarse_field(shape, spacing, step_mm, rng) -> np.ndarray:
    """Smooth random field in about [-1, 1] on ``shape``: random values on a grid every ``step_mm``,
    interpolated (cheap for large volumes)."""
    coarse = [max(2, int(np.ceil(n * s / step_mm)) + 1) for n, s in zip(shape, spacing, strict=True)]
    f = rng.uniform(-1, 1, size=coarse).astype(np.float32)
    f = ndimage.gaussian_filter(f, 0.7)
    f /= max(float(np.abs(f).max()), 1e-6)
    zoom = [n / c for n, c in zip(shape, coarse, strict=True)]
    out = ndimage.zoom(f, zoom, order=1, grid_mode=True, mode="nearest")
    return out[tuple(slice(0, n) for n in shape)]


def _rotation(angles_deg) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def augment_volume(volume: np.ndarray, brain: np.ndarray, spacing, rng: np.random.Generator):
    """One random augmentation of a RAS volume (X, Y, Z) with its brain mask. Returns (volume, brain, spacing,
    params) on a new grid with voxel size ``spacing`` (mm)."""
    sp_in = np.array(spacing, dtype=np.float64)
    sp_out = np.array(
        [rng.choice([1.0, 1.25, 1.5, 2.0]), rng.choice([1.0, 1.5, 2.0, 3.0]), rng.choice([1.0, 2.0, 3.0])]
    )
    sp_out = np.maximum(sp_out, sp_in)
    extent = np.array(volume.shape) * sp_in
    shape_out = tuple(int(np.ceil(e / s)) for e, s in zip(extent, sp_out, strict=True))
    angles = (rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-10, 10))
    scale = rng.uniform(0.92, 1.08) * rng.uniform(0.92, 1.08, size=3)
    A_inv = np.linalg.inv(_rotation(angles) @ np.diag(scale))
    elastic_mm = float(rng.uniform(0.0, 3.0))
    # pre-blur the input where the new grid is coarser (anti-aliasing)
    sigma = np.maximum(0.0, (sp_out / sp_in - 1.0) / 2.0)
    src = ndimage.gaussian_filter(volume.astype(np.float32), sigma) if np.any(sigma > 0) else volume.astype(np.float32)
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape_out, sp_out, strict=True)], indexing="ij")
    centre = extent / 2.0
    pos = np.stack([g - c for g, c in zip(grids, centre, strict=True)], axis=0).reshape(3, -1)
    pin = (A_inv @ pos).reshape(3, *shape_out)
    if elastic_mm > 0:
        for d in range(3):
            pin[d] += elastic_mm * _coarse_field(shape_out, sp_out, 30.0, rng)
    coords = [(pin[d] + centre[d]) / sp_in[d] - 0.5 for d in range(3)]
    out = ndimage.map_coordinates(src, coords, order=1, mode="constant", cval=0.0).astype(np.float32)
    b = ndimage.map_coordinates(brain.astype(np.float32), coords, order=1, mode="constant") >= 0.5
    out *= b
    top = float(np.percentile(out[b], 99.5)) if b.any() else 1.0
    gamma = float(np.exp(rng.uniform(np.log(0.75), np.log(1.35))))
    out = top * np.clip(out / top, 0, None) ** gamma
    bias = float(rng.uniform(0.0, 0.25))
    out *= np.exp(bias * _coarse_field(shape_out, sp_out, 80.0, rng))
    noise = float(rng.uniform(0.0, 0.03))
    out += (
        b
        * np.abs(rng.normal(0.0, noise * top, size=shape_out)).astype(np.float32)
        * np.sign(rng.standard_normal(shape_out)).astype(np.float32)
    )
    out = np.clip(out, 0, None) * b
    params = {
        "spacing": [float(s) for s in sp_out],
        "rotation_deg": [round(float(a), 2) for a in angles],
        "scale": [round(float(s), 3) for s in scale],
        "elastic_mm": round(elastic_mm, 2),
        "gamma": round(gamma, 3),
        "bias": round(bias, 3),
        "noise": round(noise, 4),
    }
    return out.astype(np.float32), b, tuple(float(s) for s in sp_out), params



def _blur(img, ky, kx, r):
    """Separable per-image blur of (N, C, H, W) with kernels ky, kx of shape (N, 2r+1), zero padding."""
    import torch.nn.functional as F

    n, c, h, w = img.shape
    flat = img.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (0, 0, r, r)), ky.repeat_interleave(c, 0)[:, None, :, None], groups=n * c)
    flat = F.conv2d(F.pad(flat, (r, r, 0, 0)), kx.repeat_interleave(c, 0)[:, None, None, :], groups=n * c)
    return flat.reshape(n, c, h, w)


def _per_image_uniform(x, generator):
    """``u(lo, hi, *shape)``: uniform draws of shape (N, *shape) from ``generator`` (on the CPU, so a seeded
    epoch is reproducible on any device), in ``x``'s device and dtype."""
    import torch

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand((x.shape[0], *shape), generator=generator).to(x.device, x.dtype)

    return u


def augment_slices(x, generator, strength: float = 1.0):
    """Random scanner/subject variation of a batch of normalised slices (torch, (N, C, S, S) in [0, 1]), drawn
    per image from ``generator`` (a seeded epoch is reproducible), applied on the fly in training. What differs
    between the training brains and a new subject's scan, in 2D:

    * resolution: an anisotropic Gaussian blur (sigma 0-1.5 px per axis: thick slices, partial volume),
      normalised by the blurred foreground so the brain's edge does not darken;
    * contrast: a gamma curve (0.65-1.5) and a global gain (0.85-1.1);
    * bias field: a smooth multiplicative field exp(b f), |b| <= 0.3, f drawn on a 4x4 grid;
    * noise: Gaussian noise of std 0-0.06 (scans are noisier than the averaged templates).

    Applied inside the foreground (x > 0.01) only; the background stays 0; clipped to [0, 1]. ``strength``
    scales every range (0 returns x unchanged)."""
    import torch
    import torch.nn.functional as F

    if strength <= 0:
        return x
    n, c, h, w = x.shape
    dev, dt = x.device, x.dtype
    u = _per_image_uniform(x, generator)

    fg = (x.mean(dim=1, keepdim=True) > 0.01).to(dt)
    sig = u(0.0, 1.5 * strength, 2).clamp_min(1e-3)
    r = 4
    t = torch.arange(-r, r + 1, device=dev, dtype=dt)[None]
    ky = torch.exp(-0.5 * (t / sig[:, :1]) ** 2)
    kx = torch.exp(-0.5 * (t / sig[:, 1:]) ** 2)
    ky, kx = ky / ky.sum(1, keepdim=True), kx / kx.sum(1, keepdim=True)
    out = _blur(x * fg, ky, kx, r) / _blur(fg.expand(n, c, h, w), ky, kx, r).clamp_min(1e-3)
    gamma = torch.exp(strength * u(np.log(0.65), np.log(1.5), 1, 1, 1))
    out = out.clamp(0, 1) ** gamma * u(1 - 0.15 * strength, 1 + 0.1 * strength, 1, 1, 1)
    field = F.interpolate(u(-1, 1, 1, 4, 4), size=(h, w), mode="bicubic", align_corners=False)
    out = out * torch.exp(u(-0.3 * strength, 0.3 * strength, 1, 1, 1) * field)
    out = out + u(0.0, 0.06 * strength, 1, 1, 1) * torch.randn((n, c, h, w), generator=generator).to(dev, dt)
    return (out * fg).clamp(0, 1)


def deform_slices(x, generator, strength: float = 1.0):
    """Random anatomy of a batch of normalised slices (torch, (N, C, S, S)), drawn per image from ``generator``,
    applied on the fly in training before :func:`augment_slices`: new brains from few, so that a decoder learns
    what normal anatomy looks like rather than the training brains' own. Per image, at ``strength`` 1:

    * an affine map: rotation up to 10 degrees, scale 0.88-1.12, a further anisotropic stretch of up to 8 %
      (head shapes), shear up to 0.05, a shift of up to 4 px;
    * a smooth elastic displacement drawn on a 5 x 5 grid, upsampled bicubically, up to 4 px per axis (local
      size changes: ventricles, sulci, gyri).

    Bilinear resampling with zero padding, so the background stays 0; values stay in [0, 1]. ``strength``
    scales every range (0 returns x unchanged)."""
    import torch
    import torch.nn.functional as F

    if strength <= 0:
        return x
    n, c, h, w = x.shape
    dev, dt = x.device, x.dtype
    u = _per_image_uniform(x, generator)

    rot = u(-1, 1) * np.deg2rad(10.0) * strength
    scale = torch.exp(u(-1, 1) * np.log(1.12) * strength)
    stretch = torch.exp(u(-1, 1) * np.log(1.08) * strength)
    shear = u(-1, 1) * 0.05 * strength
    sx, sy = scale * stretch, scale / stretch
    cos, sin = torch.cos(rot), torch.sin(rot)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=dt)
    # output -> input coordinates (grid_sample): rotation . shear . scale, in normalised [-1, 1] units
    theta[:, 0, 0] = cos / sx
    theta[:, 0, 1] = (-sin + shear * cos) / sx
    theta[:, 1, 0] = sin / sy
    theta[:, 1, 1] = (cos + shear * sin) / sy
    theta[:, 0, 2] = u(-1, 1) * (8.0 / w) * strength
    theta[:, 1, 2] = u(-1, 1) * (8.0 / h) * strength
    grid = F.affine_grid(theta, (n, c, h, w), align_corners=False)
    disp = F.interpolate(u(-1, 1, 2, 5, 5), size=(h, w), mode="bicubic", align_corners=False)
    amp = torch.tensor([8.0 / w, 8.0 / h], device=dev, dtype=dt) * strength  # 4 px in normalised units
    grid = grid + disp.permute(0, 2, 3, 1) * amp
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp(0, 1)
