"""Between a RAS volume and model-sized axial slices (N, C, S, S), and back.

Display convention (used by the models, the viewer and figures alike): axial slice k of a RAS volume is shown
radiologically, anterior at the top and the patient's right on the viewer's left:
``axial_image(vol, k) = vol[::-1, ::-1, k].T`` (rows = -Y, columns = -X).

To model size: the in-plane region (optionally cropped to the foreground's bounding box over all slices, plus a
margin, so brains fill the frame alike whatever the file's field of view) is resampled by *physical* size to
pixels of p = max(height_mm, width_mm) / S, keeping the aspect ratio, and centred with zero padding. The
resampling is separable: each slice is ``R @ image @ C.T`` with interpolation matrices R and C built from a tent
kernel that widens when downsampling (anti-aliased linear interpolation). The inverse uses the same geometry in
the other direction, so a mask drawn on the study comes back on the same voxels when it is resolved at the
model's scale (and exactly when no downsampling is involved).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from app.errors import StudyError


def axial_image(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice k of a RAS volume (X, Y, Z[, C]) as displayed: (rows, cols[, C])."""
    sl = volume[::-1, ::-1, k]
    return np.swapaxes(sl, 0, 1)


@dataclass(frozen=True)
class SliceGeometry:
    """Everything the inverse mapping needs (JSON-friendly via ``to_dict``)."""

    volume_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    size: int
    slices: tuple[int, ...]
    crop: tuple[int, int, int, int]  # x0, x1, y0, y1 (voxel index ranges on the RAS grid)
    pixel_mm: float
    offset: tuple[float, float]  # (rows, cols) start of the image inside the S x S frame, in model pixels

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def zoom(self) -> tuple[float, float]:
        """Model pixels per study pixel along display rows (Y) and columns (X)."""
        return (self.spacing[1] / self.pixel_mm, self.spacing[0] / self.pixel_mm)


def _tent_matrix(n_out: int, n_in: int, centres: np.ndarray, support: float) -> np.ndarray:
    """(n_out, n_in) weights: output i samples input coordinate centres[i] with a tent of half-width
    ``support`` input pixels (1 = linear interpolation; >1 averages, i.e. anti-aliasing). Input pixels
    outside [0, n_in) count as zero (padding)."""
    pad = int(np.ceil(support)) + 1
    k = np.arange(-pad, n_in + pad, dtype=np.float64)
    w = np.clip(1.0 - np.abs(k[None, :] - centres[:, None]) / support, 0.0, None)
    # normalise over the infinite grid (so sampled tents sum to exactly 1 inside: no ripple), then drop the
    # padding columns (so outside the image counts as zero)
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    return w[:, pad : pad + n_in].astype(np.float32)


def _forward_matrix(n_src: int, zoom: float, offset: float, size: int) -> np.ndarray:
    """Model pixel i <- source coordinate u = (i + 0.5 - offset) / zoom - 0.5."""
    i = np.arange(size, dtype=np.float64)
    u = (i + 0.5 - offset) / zoom - 0.5
    return _tent_matrix(size, n_src, u, max(1.0, 1.0 / zoom))


def _inverse_matrix(n_src: int, zoom: float, offset: float, size: int) -> np.ndarray:
    """Source pixel k <- model coordinate i = (k + 0.5) * zoom + offset - 0.5."""
    k = np.arange(n_src, dtype=np.float64)
    i = (k + 0.5) * zoom + offset - 0.5
    return _tent_matrix(n_src, size, i, max(1.0, zoom))


def _separable(img: np.ndarray, R: np.ndarray, C: np.ndarray) -> np.ndarray:
    """R @ img @ C.T for a stack (N, K, h, w), as two large 2D matrix products on contiguous memory (a broadcast
    matmul over non-contiguous views is ~10x slower)."""
    n, k, h, w = img.shape
    a = np.ascontiguousarray(img, dtype=np.float32).reshape(n * k * h, w) @ C.T  # (n k h, S_w)
    a = a.reshape(n * k, h, -1).transpose(0, 2, 1).reshape(-1, h) @ R.T  # (n k S_w, S_h)
    return np.ascontiguousarray(a.reshape(n, k, C.shape[0], R.shape[0]).transpose(0, 1, 3, 2))


def foreground_crop(
    foreground: np.ndarray, spacing: tuple[float, float, float], margin_mm: float = 8.0
) -> tuple[int, int, int, int]:
    """In-plane bounding box (x0, x1, y0, y1) of a foreground (X, Y, Z) over all slices, plus a margin."""
    fg = np.asarray(foreground, dtype=bool)
    X, Y = fg.shape[:2]
    if not fg.any():
        return (0, X, 0, Y)
    xs = np.flatnonzero(fg.any(axis=(1, 2)))
    ys = np.flatnonzero(fg.any(axis=(0, 2)))
    mx = int(np.ceil(margin_mm / spacing[0]))
    my = int(np.ceil(margin_mm / spacing[1]))
    return (max(0, xs[0] - mx), min(X, xs[-1] + 1 + mx), max(0, ys[0] - my), min(Y, ys[-1] + 1 + my))


def make_geometry(
    volume_shape: tuple[int, ...],
    spacing: tuple[float, float, float],
    size: int,
    slices=None,
    crop: tuple[int, int, int, int] | None = None,
) -> SliceGeometry:
    X, Y, Z = (int(s) for s in volume_shape[:3])
    x0, x1, y0, y1 = crop if crop is not None else (0, X, 0, Y)
    if not (0 <= x0 < x1 <= X and 0 <= y0 < y1 <= Y):
        raise StudyError(f"crop {crop} is outside the volume {volume_shape[:3]}")
    sl = tuple(range(Z)) if slices is None else tuple(int(k) for k in slices)
    if any(k < 0 or k >= Z for k in sl):
        raise StudyError(f"slice index out of range 0..{Z - 1}")
    sx, sy = float(spacing[0]), float(spacing[1])
    h_mm, w_mm = (y1 - y0) * sy, (x1 - x0) * sx
    pixel = max(h_mm, w_mm) / size
    off = ((size - h_mm / pixel) / 2.0, (size - w_mm / pixel) / 2.0)
    return SliceGeometry(
        volume_shape=(X, Y, Z),
        spacing=(sx, sy, float(spacing[2])),
        size=int(size),
        slices=sl,
        crop=(int(x0), int(x1), int(y0), int(y1)),
        pixel_mm=float(pixel),
        offset=(float(off[0]), float(off[1])),
    )


def _crop_display(volume: np.ndarray, g: SliceGeometry) -> np.ndarray:
    """(N, H0, W0[, C]) display-oriented crops of the chosen slices."""
    x0, x1, y0, y1 = g.crop
    sub = volume[x0:x1, y0:y1][:, :, list(g.slices)]  # (w, h, N[, C])
    sub = sub[::-1, ::-1]
    axes = (2, 1, 0) + ((3,) if sub.ndim == 4 else ())
    return np.transpose(sub, axes)


def to_model_slices(volume: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Volume (X, Y, Z) or (X, Y, Z, C) -> (N, C, S, S) float32 for the geometry's slices."""
    g = geometry
    if tuple(volume.shape[:3]) != g.volume_shape:
        raise StudyError(f"volume shape {volume.shape[:3]} does not match the slicing geometry {g.volume_shape}")
    img = _crop_display(np.asarray(volume, dtype=np.float32), g)
    h0, w0 = img.shape[1:3]
    zr, zc = g.zoom
    R = _forward_matrix(h0, zr, g.offset[0], g.size)
    C = _forward_matrix(w0, zc, g.offset[1], g.size)
    if img.ndim == 3:
        img = img[:, None]
    else:
        img = np.moveaxis(img, 3, 1)
    return _separable(img, R, C)


def from_model_slices(maps: np.ndarray, geometry: SliceGeometry, kind: str = "map", fill: float = 0.0) -> np.ndarray:
    """(N, S, S) or (N, C, S, S) model-space maps -> volume (X, Y, Z[, C]) on the study grid. ``kind="mask"``
    interpolates the mask and keeps voxels >= 0.5 (bool); slices not in the geometry get ``fill``/False."""
    g = geometry
    m = np.asarray(maps, dtype=np.float32)
    chan = m.ndim == 4
    if m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[0] != len(g.slices) or m.shape[2:] != (g.size, g.size):
        raise StudyError(f"maps of shape {maps.shape} do not fit the geometry ({len(g.slices)} slices of {g.size})")
    x0, x1, y0, y1 = g.crop
    h0, w0 = y1 - y0, x1 - x0
    zr, zc = g.zoom
    R = _inverse_matrix(h0, zr, g.offset[0], g.size)
    C = _inverse_matrix(w0, zc, g.offset[1], g.size)
    disp = _separable(m, R, C)  # (N, C, h0, w0) display orientation
    # display (rows=-y, cols=-x) -> (x, y) on the crop
    sub = np.transpose(disp, (3, 2, 0, 1))[::-1, ::-1]  # (w0, h0, N, C)
    shape = (*g.volume_shape, m.shape[1])
    if kind == "mask":
        out = np.zeros(shape, dtype=bool)
        out[x0:x1, y0:y1][:, :, list(g.slices)] = sub >= 0.5
    else:
        out = np.full(shape, fill, dtype=np.float32)
        out[x0:x1, y0:y1][:, :, list(g.slices)] = sub
    return out if chan else out[..., 0]


def mask_to_model_slices(mask: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """A study-grid mask (X, Y, Z) -> (N, S, S) bool at model resolution (area fraction >= 0.5)."""
    return to_model_slices(np.asarray(mask, dtype=np.float32), geometry)[:, 0] >= 0.5
