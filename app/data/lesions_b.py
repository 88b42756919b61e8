"""Style B synthetic lesions: a second generator, designed independently of :mod:`app.data.lesions` (style A),
used ONLY for testing (the ``test_b`` split of ``data brain-proxy``). Style A makes the validation and the
ordinary test lesions; anything tuned on validation meets style B for the first time on ``test_b``, so a model
or a post-processing that has learnt style A's look (ellipsoids, contrast relative to the local mean, a flipped
local patch) is caught out. Same record type (:class:`app.data.lesions.Lesion`, here the subclass
:class:`LesionB`) and the same kinds (``KINDS``: bright, dark, cavity, foreign, mirror), so per-kind reports
cover both styles.

How a style B lesion is made (every number drawn from the ``numpy.random.Generator`` passed in):

- **Shape**: a smooth 3-D Gaussian random field (white noise smoothed with a correlation length of 0.3-0.5 of
  the radius) plus a soft spherical window ``beta * (1 - (r/R)^2)`` (beta 0.6-1.4), thresholded so that 35-60 %
  of the window's ball is kept; the largest connected piece, holes filled. The window's diameter is drawn
  log-uniformly in 4-40 mm. The result is multi-lobed and less convex than style A's noisy ellipsoids
  (lower solidity = volume / convex-hull volume; measured in ``docs/data.md``). Edges are set by the signed
  distance to the shape in mm: a logistic ramp 0.5-2 mm wide (cavities 0.1-0.3 mm: sharp).
- **Intensities from the subject's own tissue levels**, not from the local mean: a 3-class k-means of the brain's
  intensities (initialised at the 5th/40th/85th percentiles) gives the CSF, grey-matter and white-matter levels
  of a T1 image (classes in increasing intensity; Delta = WM - GM).

  - ``bright``: WM + 0.3-0.9 Delta; in 40 % of those >= 8 mm across, a ring: a bright rim (WM + 0.5-1.0 Delta,
    1-2.5 mm thick) around a darker core between CSF and GM (necrosis-like). Both at most the 99.5th
    percentile + 0.1 Delta: the app's MRI normalisation maps the 99.5th percentile to 1 and clips above, so a
    brighter lesion would be a flat white patch without noise.
  - ``dark``: between CSF and GM (CSF + 0.15-0.75 (GM - CSF)): a T1 hypointensity.
  - ``cavity``: fluid: between the 1st percentile and the CSF class (CSF - 0.2-0.6 (CSF - p1): the CSF class
    centre is raised by partial volume), a sharp edge and a thin brighter rim (GM + 0.4-1.0 Delta, about one
    voxel).
  - ``foreign``: a structured texture at a tissue-like mean (between GM and WM): smoothed stripes of 6-14 mm
    period in a random direction, mixed with grain (smooth noise, 1.5 mm), amplitude 0.5-1.0 Delta.
  - ``mirror``: tissue copied from the CONTRALATERAL hemisphere: the image mirrored left-right about its
    mid-sagittal plane (the plane of axis 0 that best overlaps the brain mask with its own mirror image, to half a
    voxel, so the copy is voxel-exact), inside a lesion shape that stays on its own side of the plane. Nothing is
    added: the copy carries the other hemisphere's real noise. Axis 0 must be left-right (RAS canonical, as every
    study in the app is held).

  Synthetic values (every kind but mirror) get a smooth heterogeneity (8 % of Delta) and **noise matched to the
  subject**: the high-pass residual (image minus its 1-voxel Gaussian blur) in homogeneous tissue (white matter
  two voxels or more from its boundary) gives the noise level as a robust std (1.4826 MAD), locally (in the
  lesion's box, when >= 50 such voxels are there; kept within 0.5-2x the global level) or globally, and its lag-1
  autocorrelation per axis gives the noise texture: white noise smoothed per axis so that its own high-pass
  residual has the same autocorrelation, scaled to the same residual std. If the input holds only integers
  (8-bit scans), the replaced values are rounded too.
- **Mass effect** (bright/dark/foreign, >= 10 mm across, probability ``mass_effect_prob``): tissue pushed away
  from the lesion's own shape (not radially): displacement along the gradient of the shape blurred at half its
  radius, at most 10-30 % of the radius, tapered to zero at the faces of the lesion's box (no seam).
- **Floor**: a lesion whose mean |change| over its mask is below ``MIN_CHANGE`` (8 %) of the brain's 1-99th
  percentile range is redrawn elsewhere (as in style A), so every mask marks a visible change.

The mask is the shape (blend weight >= 0.5) inside the brain; nothing outside the brain changes, and nothing
beyond the soft edge or the mass-effect zone. ``labels_out`` (optional, uint8 like ``volume``) receives
``1 + KINDS.index(kind)`` on each lesion's mask (a later lesion overwrites an earlier one, as its paint does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.cluster.vq import kmeans2

from app.data.lesions import KINDS, MIN_CHANGE, Lesion

DEFAULT_WEIGHTS_B = {"bright": 0.25, "dark": 0.25, "cavity": 0.15, "foreign": 0.15, "mirror": 0.2}
DIAMETER_MM = (4.0, 40.0)
STYLE = "B"


@dataclass
class LesionB(Lesion):
    """A style B lesion (a :class:`Lesion`, so per-kind code treats both styles alike). ``radius_mm`` is the
    spherical window's radius; ``centre`` its centre."""

    style: str = STYLE
    equiv_diameter_mm: float = 0.0  # diameter of the ball with the mask's volume
    solidity: float = 0.0  # mask volume / convex-hull volume (1 = convex)
    level: float = 0.0  # intended core intensity (image units); mirror: 0
    rim: str = ""  # "ring" (bright rim, dark core) or "rim" (cavity rim), else ""
    noise_sigma: float = 0.0  # high-pass std of the noise added to the replaced values (image units)
    source_centre: tuple[int, ...] | None = None  # mirror: the contralateral voxel copied onto ``centre``


@dataclass(frozen=True)
class TissueLevels:
    """Intensity levels of the subject's brain (image units)."""

    csf: float
    gm: float
    wm: float
    p1: float
    p99: float
    p995: float

    @property
    def delta(self) -> float:
        return max(self.wm - self.gm, 0.05 * (self.p99 - self.p1), 1e-6)

    def to_dict(self) -> dict:
        return asdict(self)


def tissue_levels(volume: np.ndarray, brain: np.ndarray) -> TissueLevels:
    """CSF / GM / WM levels by a 3-class k-means of the brain's intensities (T1 order: increasing)."""
    vals = np.asarray(volume, dtype=np.float64)[np.asarray(brain, dtype=bool)]
    if vals.size < 10:
        raise ValueError("the brain mask holds fewer than 10 voxels")
    p1, p5, p40, p85, p99, p995 = np.percentile(vals, [1, 5, 40, 85, 99, 99.5])
    sub = vals[:: max(1, vals.size // 200_000)].reshape(-1, 1)
    init = np.array([[p5], [p40], [p85]])
    if np.ptp(init) <= 0:
        cent = init[:, 0]
    else:
        cent, _ = kmeans2(sub, init, iter=30, minit="matrix", missing="warn")
        cent = np.sort(cent[:, 0])
    return TissueLevels(*(float(c) for c in cent), float(p1), float(p99), float(p995))


@dataclass(frozen=True)
class NoiseModel:
    """Noise matched to a subject: ``sigma`` is the high-pass residual std in homogeneous tissue (image units),
    ``smooth_vox`` the per-axis Gaussian smoothing of white noise that reproduces the residual's lag-1
    autocorrelation ``lag1``, ``gain`` the high-pass std of that noise at unit std."""

    sigma: float
    smooth_vox: tuple[float, ...]
    lag1: tuple[float, ...]
    gain: float

    def sample(self, shape, rng: np.random.Generator, sigma: float | None = None) -> np.ndarray:
        """A noise field whose high-pass residual has std ``sigma`` (default: the global level)."""
        n = rng.standard_normal(shape).astype(np.float32)
        if any(s > 0 for s in self.smooth_vox):
            n = ndimage.gaussian_filter(n, self.smooth_vox, mode="reflect")
        sd = float(n.std())
        n = n / sd if sd > 0 else n
        return n * np.float32((self.sigma if sigma is None else sigma) / self.gain)

    def to_dict(self) -> dict:
        return asdict(self)


def _highpass(x: np.ndarray) -> np.ndarray:
    return x - ndimage.gaussian_filter(x, 1.0, mode="reflect")


def _lag1(r: np.ndarray, where: np.ndarray) -> tuple[float, ...]:
    """Lag-1 autocorrelation of ``r`` along each axis over pairs of voxels both in ``where``."""
    out = []
    for ax in range(r.ndim):
        a = [slice(None)] * r.ndim
        b = [slice(None)] * r.ndim
        a[ax], b[ax] = slice(1, None), slice(None, -1)
        both = where[tuple(a)] & where[tuple(b)]
        ra, rb = r[tuple(a)][both], r[tuple(b)][both]
        den = float(np.sqrt((ra * ra).mean() * (rb * rb).mean())) if ra.size else 0.0
        out.append(float((ra * rb).mean() / den) if den > 0 else 0.0)
    return tuple(out)


def _fit_texture(target: tuple[float, ...]) -> tuple[tuple[float, ...], float]:
    """Per-axis smoothing (voxels) of white noise whose high-pass residual has lag-1 autocorrelations ``target``,
    by coordinate-wise bisection on a fixed 40^d calibration block; returns (smoothing, high-pass gain)."""
    nd = len(target)
    white = np.random.default_rng(12345).standard_normal((40,) * nd).astype(np.float32)
    inner = np.zeros(white.shape, dtype=bool)
    inner[(slice(5, -5),) * nd] = True

    def measure(s):
        n = ndimage.gaussian_filter(white, s, mode="reflect") if any(v > 0 for v in s) else white
        n = n / n.std()
        r = _highpass(n)
        return _lag1(r, inner), float(r[inner].std())

    s = [0.0] * nd
    for _sweep in range(2):
        for ax in range(nd):
            lo, hi = 0.0, 3.0
            for _ in range(10):
                mid = 0.5 * (lo + hi)
                trial = list(s)
                trial[ax] = mid
                if measure(trial)[0][ax] < target[ax]:
                    lo = mid
                else:
                    hi = mid
            s[ax] = 0.5 * (lo + hi) if 0.5 * (lo + hi) > 0.05 else 0.0
    return tuple(s), measure(s)[1]


@dataclass
class _Residual:
    r: np.ndarray  # high-pass residual
    homogeneous: np.ndarray  # bool: where it measures noise


def _robust_std(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else 0.0


def estimate_noise(
    volume: np.ndarray, brain: np.ndarray, spacing, levels: TissueLevels | None = None
) -> tuple[NoiseModel, _Residual]:
    """The subject's noise (level and texture) from the high-pass residual in homogeneous tissue: white matter
    (smoothed intensity above the GM/WM midpoint) two voxels from its boundary (one if too few are left) and two
    from the brain's;
    level = robust std (1.4826 MAD), texture = lag-1 autocorrelation per axis. Falls back to the whole eroded
    brain where the white matter is too small (< 200 voxels)."""
    vol = np.asarray(volume, dtype=np.float32)
    brain = np.asarray(brain, dtype=bool)
    levels = levels or tissue_levels(vol, brain)
    r = _highpass(vol)
    inner = ndimage.binary_erosion(brain, iterations=2)
    if inner.sum() < 200:
        inner = brain
    wm = inner & (ndimage.gaussian_filter(vol, 1.0) > 0.5 * (levels.gm + levels.wm))
    hom = ndimage.binary_erosion(wm, iterations=2)  # >= 2 voxels from any edge: the high-pass sees no boundary
    if hom.sum() < 500:
        hom = ndimage.binary_erosion(wm, iterations=1)
    if hom.sum() < 200:
        hom = inner
    sigma = _robust_std(r[hom])
    lag = _lag1(r, hom)
    smooth, gain = _fit_texture(lag)
    return NoiseModel(max(sigma, 1e-6), smooth, lag, gain), _Residual(r, hom)


def midsagittal_plane(brain: np.ndarray) -> float:
    """Position (voxel units along axis 0, in half-voxel steps) of the left-right mirror plane that best overlaps
    the brain mask with its mirror image (Dice); voxel x maps to ``2 * c - x``."""
    brain = np.asarray(brain, dtype=bool)
    n = brain.shape[0]
    xs = np.flatnonzero(brain.reshape(n, -1).any(axis=1))
    if xs.size == 0:
        return (n - 1) / 2.0
    centre2 = int(xs[0] + xs[-1])
    reach = max(2, (int(xs[-1]) - int(xs[0])) // 4)
    total = 2.0 * brain.sum()
    best, best_c2 = -1.0, centre2
    for c2 in range(centre2 - reach, centre2 + reach + 1):
        idx = c2 - np.arange(n)
        ok = (idx >= 0) & (idx < n)
        overlap = (brain[ok] & brain[idx[ok]]).sum()
        d = 2.0 * overlap / total
        if d > best:
            best, best_c2 = d, c2
    return best_c2 / 2.0


def solidity(region: np.ndarray, spacing) -> float:
    """Volume / convex-hull volume of a voxel region (hull of the voxels' corners, so <= 1; 1 = convex)."""
    from scipy.spatial import ConvexHull, QhullError

    region = np.asarray(region, dtype=bool)
    if region.sum() == 0:
        return 0.0
    sp = np.asarray(spacing, dtype=np.float64)
    edge = region & ~ndimage.binary_erosion(region)
    pts = np.argwhere(edge).astype(np.float64)
    corners = np.array(np.meshgrid(*[[-0.5, 0.5]] * region.ndim, indexing="ij")).reshape(region.ndim, -1).T
    allp = (pts[:, None, :] + corners[None]).reshape(-1, region.ndim) * sp
    try:
        hull = ConvexHull(np.unique(allp, axis=0))
    except QhullError:
        return 1.0
    return float(region.sum() * np.prod(sp) / hull.volume)


def _grids_mm(bshape, centre_in_box, spacing):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in bshape], indexing="ij")
    return [(g - c) * s for g, c, s in zip(grids, centre_in_box, spacing, strict=True)]


def _smooth_unit(shape, sigma_mm, spacing, rng) -> np.ndarray:
    n = ndimage.gaussian_filter(
        rng.standard_normal(shape).astype(np.float32), [max(0.6, sigma_mm / s) for s in spacing], mode="reflect"
    )
    sd = float(n.std())
    return n / sd if sd > 0 else n


def _lobed_region(bshape, centre_in_box, radius_mm, spacing, rng) -> np.ndarray:
    """Thresholded smooth Gaussian random field inside a soft spherical window; largest piece, holes filled."""
    d = _grids_mm(bshape, centre_in_box, spacing)
    rho = np.sqrt(sum(x**2 for x in d)) / radius_mm
    ball = rho <= 1.0
    g = _smooth_unit(bshape, radius_mm * float(rng.uniform(0.3, 0.5)), spacing, rng)
    gb = g[ball]
    g = (g - gb.mean()) / max(float(gb.std()), 1e-6)
    f = g + float(rng.uniform(0.6, 1.4)) * (1.0 - rho**2)
    keep = float(rng.uniform(0.35, 0.6))
    t = np.quantile(f[ball], 1.0 - keep)
    return ndimage.binary_fill_holes(_largest_piece(ball & (f > t)))


def _largest_piece(region: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(region, structure=ndimage.generate_binary_structure(region.ndim, region.ndim))
    if n <= 1:
        return region
    sizes = ndimage.sum_labels(region, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def _signed_distance(region: np.ndarray, spacing) -> np.ndarray:
    """mm, > 0 inside (distance to the boundary between voxel centres, so boundary voxels are +-half a voxel)."""
    half = 0.5 * min(spacing)
    inside = ndimage.distance_transform_edt(region, sampling=spacing) - half
    outside = ndimage.distance_transform_edt(~region, sampling=spacing) - half
    return np.where(region, np.maximum(inside, 0.25 * half), -np.maximum(outside, 0.25 * half)).astype(np.float32)


def _push_away(patch, region, radius_mm, strength_mm, spacing) -> np.ndarray:
    """Mass effect that follows the lesion's shape: new(x) = old(x + u(x)), u along the gradient of the shape
    blurred at half its radius (pointing at the lesion), |u| <= strength_mm."""
    phi = ndimage.gaussian_filter(region.astype(np.float32), [max(0.7, 0.5 * radius_mm / s) for s in spacing])
    grad = np.gradient(phi, *spacing)
    mag = np.sqrt(sum(g**2 for g in grad))
    gmax = float(mag.max())
    if gmax <= 0:
        return patch.copy()
    idx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in patch.shape], indexing="ij")
    # taper to zero towards the patch's faces (no seam where the patch meets the untouched image)
    taper = np.ones(patch.shape, dtype=np.float32)
    for i, n in zip(idx, patch.shape, strict=True):
        ramp = max(2.0, n / 4.0)
        taper *= np.clip(np.minimum(i, n - 1 - i) / ramp, 0.0, 1.0)
    u = [strength_mm * taper * g / gmax for g in grad]
    small = np.sqrt(sum((ui / s) ** 2 for ui, s in zip(u, spacing, strict=True))) < 0.05
    coords = [np.where(small, i, i + ui / s) for i, ui, s in zip(idx, u, spacing, strict=True)]
    return ndimage.map_coordinates(patch, coords, order=1, mode="nearest").astype(np.float32)


def _box(centre, half_vox, shape):
    return tuple(slice(max(0, c - h), min(s, c + h + 1)) for c, h, s in zip(centre, half_vox, shape, strict=True))


def _stripes(bshape, spacing, rng) -> np.ndarray:
    d = _grids_mm(bshape, [n / 2.0 for n in bshape], spacing)
    v = rng.standard_normal(len(bshape))
    v /= max(float(np.linalg.norm(v)), 1e-6)
    period = float(rng.uniform(6.0, 14.0))
    s = np.sin(2 * np.pi * sum(x * c for x, c in zip(d, v, strict=True)) / period + rng.uniform(0, 2 * np.pi))
    s = ndimage.gaussian_filter(s.astype(np.float32), [max(0.5, 1.0 / sp) for sp in spacing])
    grain = _smooth_unit(bshape, 1.5, spacing, rng)
    p = 0.75 * s / max(float(s.std()), 1e-6) + 0.25 * grain
    return (p / max(float(p.std()), 1e-6)).astype(np.float32)


def insert_lesions_b(
    volume: np.ndarray,
    brain: np.ndarray,
    spacing,
    rng: np.random.Generator,
    n_lesions: int = 3,
    centre_region: np.ndarray | None = None,
    *,
    diameter_mm: tuple[float, float] = DIAMETER_MM,
    kinds: dict[str, float] | None = None,
    mass_effect_prob: float = 0.35,
    labels_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[LesionB]]:
    """Insert ``n_lesions`` style B lesions (module docstring); returns (new volume float32, bool mask, records).
    ``centre_region`` (bool, like ``brain``) restricts where the lesions' window centres may lie."""
    vol = np.asarray(volume, dtype=np.float32).copy()
    brain = np.asarray(brain, dtype=bool)
    spacing = tuple(float(s) for s in spacing)
    if vol.shape != brain.shape or len(spacing) != vol.ndim:
        raise ValueError("volume, brain mask and spacing must agree in shape/dimension")
    if labels_out is not None and labels_out.shape != vol.shape:
        raise ValueError("labels_out must have the volume's shape")
    weights = kinds or DEFAULT_WEIGHTS_B
    if not set(weights) <= set(KINDS):
        raise ValueError(f"unknown lesion kinds {sorted(set(weights) - set(KINDS))}")
    names = list(weights)
    probs = np.array([weights[k] for k in names], dtype=np.float64)
    probs /= probs.sum()
    levels = tissue_levels(vol, brain)
    noise, resid = estimate_noise(vol, brain, spacing, levels)
    mid = midsagittal_plane(brain)
    integer = bool(np.all(vol[brain] == np.round(vol[brain])))
    rng_range = max(levels.p99 - levels.p1, 1e-6)
    delta = levels.delta
    # brighter than this saturates in the app's MRI normalisation (its 99.5th percentile is 1.0)
    cap = max(levels.p995 + 0.1 * delta, levels.wm + 0.3 * delta)
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    xmm = (np.arange(vol.shape[0], dtype=np.float32) - mid) * spacing[0]  # signed distance to the midline
    allowed = brain if centre_region is None else brain & np.asarray(centre_region, dtype=bool)
    mask = np.zeros(vol.shape, dtype=bool)
    lesions: list[LesionB] = []
    for _ in range(n_lesions):
        for _attempt in range(20):
            kind = str(rng.choice(names, p=probs))
            diam = float(np.exp(rng.uniform(np.log(diameter_mm[0]), np.log(diameter_mm[1]))))
            R = diam / 2.0
            ok = allowed & ~mask & (depth >= 0.5 * R)
            if kind == "mirror":
                side_ok = np.abs(xmm) >= 0.5 * R + spacing[0]
                ok &= side_ok.reshape((-1,) + (1,) * (vol.ndim - 1))
            cand = np.flatnonzero(ok)
            if cand.size == 0:
                continue
            centre = tuple(int(c) for c in np.unravel_index(int(rng.choice(cand)), vol.shape))
            me = 0.0
            if kind in ("bright", "dark", "foreign") and diam >= 10 and rng.random() < mass_effect_prob:
                me = float(rng.uniform(0.1, 0.3) * R)
            edge = float(rng.uniform(0.1, 0.3)) if kind == "cavity" else float(rng.uniform(0.5, 2.0))
            half = [int(np.ceil((R + 2.5 * me + 2.0 * edge + 2 * s) / s)) for s in spacing]
            box = _box(centre, half, vol.shape)
            cib = [c - b.start for c, b in zip(centre, box, strict=True)]
            bshape = tuple(b.stop - b.start for b in box)
            region = _lobed_region(bshape, cib, R, spacing, rng)
            bbrain = brain[box]
            src = None
            src_centre = None
            if kind == "mirror":
                xs = np.arange(box[0].start, box[0].stop)
                same = (xmm[xs] > 0) == (xmm[centre[0]] > 0)
                region &= same.reshape((-1,) + (1,) * (vol.ndim - 1)) & (np.abs(xmm[xs]) >= 0.5 * spacing[0]).reshape(
                    (-1,) + (1,) * (vol.ndim - 1)
                )
                sx = (np.rint(2 * mid).astype(int) - xs).clip(0, vol.shape[0] - 1)
                src = vol[(sx, *box[1:])] if vol.ndim > 1 else vol[sx]
                src_brain = brain[(sx, *box[1:])]
                src_lesion = mask[(sx, *box[1:])]
                src_centre = (int(round(2 * mid)) - centre[0], *centre[1:])
            region = _largest_piece(region & bbrain)  # one piece, whatever the clipping did
            if region.sum() < 2:
                continue
            if src is not None and (src_lesion[region].any() or src_brain[region].mean() < 0.95):
                continue
            sd = _signed_distance(region, spacing)
            alpha = (1.0 / (1.0 + np.exp(np.clip(-sd * 4.0 / edge, -40, 40)))).astype(np.float32)
            alpha[alpha < 0.02] = 0.0
            alpha[~bbrain] = 0.0
            if kind == "mirror":  # never blend across the midline
                alpha[~(same.reshape((-1,) + (1,) * (vol.ndim - 1)) & src_brain)] = 0.0
            old = vol[box]
            base = _push_away(old, region, R, me, spacing) if me > 0 else old.copy()
            base = np.where(bbrain, base, old)
            contrast, level, rim, sig = 0.0, 0.0, "", 0.0
            if kind == "mirror":
                new = base * (1.0 - alpha) + alpha * src
            else:
                thick = float(sd[region].max()) if region.any() else 0.0
                if kind == "bright":
                    level = min(levels.wm + float(rng.uniform(0.3, 0.9)) * delta, cap)
                    target = np.full(bshape, level, dtype=np.float32)
                    if diam >= 8 and rng.random() < 0.4:
                        rw = max(float(rng.uniform(1.0, 2.5)), min(spacing))
                        if thick >= 2 * rw:
                            rim = "ring"
                            core = levels.csf + float(rng.uniform(0.3, 0.9)) * (levels.gm - levels.csf)
                            rim_level = min(levels.wm + float(rng.uniform(0.5, 1.0)) * delta, cap)
                            target = np.where(sd <= rw, rim_level, core).astype(np.float32)
                            level = rim_level
                elif kind == "dark":
                    level = levels.csf + float(rng.uniform(0.15, 0.75)) * (levels.gm - levels.csf)
                    target = np.full(bshape, level, dtype=np.float32)
                elif kind == "cavity":
                    level = levels.csf - float(rng.uniform(0.2, 0.6)) * max(levels.csf - levels.p1, 0.0)
                    target = np.full(bshape, level, dtype=np.float32)
                    rw = max(min(spacing), float(rng.uniform(0.8, 1.5)))
                    if thick >= 2 * rw:
                        rim = "rim"
                        target = np.where(sd <= rw, levels.gm + float(rng.uniform(0.4, 1.0)) * delta, level)
                        target = target.astype(np.float32)
                else:  # foreign
                    level = levels.gm + float(rng.uniform(0.0, 1.0)) * delta
                    target = level + float(rng.uniform(0.5, 1.0)) * delta * _stripes(bshape, spacing, rng)
                target = target + 0.08 * delta * _smooth_unit(bshape, 2.0, spacing, rng)
                hom = resid.homogeneous[box]
                sig = _robust_std(resid.r[box][hom]) if hom.sum() >= 50 else noise.sigma
                sig = float(np.clip(sig, 0.5 * noise.sigma, 2.0 * noise.sigma))
                new = base * (1.0 - alpha) + alpha * (target + noise.sample(bshape, rng, sig))
                local = float(ndimage.gaussian_filter(old, 1.0)[region].mean())
                contrast = (level - local) / rng_range
            new = np.where(bbrain & (alpha > 0) | (base != old), new, old).astype(np.float32)
            new = np.where(bbrain, new, old)
            if integer:
                changed = new != old
                new = np.where(changed, np.clip(np.round(new), 0, None), old).astype(np.float32)
            change = float(np.abs(new - old)[region].mean())
            if change < MIN_CHANGE * rng_range:
                continue
            vol[box] = new
            mask[box] |= region
            if labels_out is not None:
                lab = labels_out[box]
                lab[region] = KINDS.index(kind) + 1
            nvox = int(region.sum())
            lesions.append(
                LesionB(
                    kind=kind,
                    centre=centre,
                    radius_mm=R,
                    contrast=float(contrast),
                    mass_effect_mm=me,
                    voxels=nvox,
                    mean_change=change,
                    equiv_diameter_mm=float(
                        2.0 * (3.0 * nvox * np.prod(spacing) / (4.0 * np.pi)) ** (1 / 3)
                        if vol.ndim == 3
                        else 2.0 * np.sqrt(nvox * np.prod(spacing) / np.pi)
                    ),
                    solidity=solidity(region, spacing),
                    level=float(level),
                    rim=rim,
                    noise_sigma=float(sig),
                    source_centre=src_centre,
                )
            )
            break
    return vol, mask, lesions
