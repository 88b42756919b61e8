"""Brain MRI straight from the scanner: N4 bias-field correction and atlas-based brain extraction (SimpleITK).

- :func:`n4_correct`: N4 (Tustison et al. 2010) fitted on a copy shrunk to ~8 mm voxels inside the head, the
  bias field then evaluated on the full grid and divided out (seconds, not minutes).
- :func:`looks_skull_stripped`: a volume whose non-zero part is brain-sized (< 2.3 l) and surrounded by an
  exactly constant background, with no bright rim (scalp fat) around it, is taken as already skull-stripped and
  left as it is.
- :func:`extract_brain`: the shipped MNI152 2009a template (:mod:`app.data.atlas`) registered to the study with
  Mattes mutual information (similarity from several starts at 8 mm, then affine at 8 and 4 mm, sampling
  restricted to the template's dilated brain; a coarse B-spline stage exists, ``deformable=True``, and is off:
  docs/data.md); the template's brain mask is carried onto the study's grid through the transform. Quality
  checks (brain volume, brain/background contrast, tissue contrast inside the mask) decide whether the
  registration is trusted; a failed one is reported (the caller warns), never silent.
- :func:`refine_brain_mask` (T1 studies, on by default): the affine atlas mask fitted to the study's own
  intensities -- dark CSF/skull band and bright scalp fat out, the tissue component holding the deep brain in,
  bounded to 3 mm outside / 10 mm inside the atlas mask's surface. Measured (parameters chosen on Colin27 only):
  Colin27 ``ch2`` vs ``ch2bet`` Dice 0.957 -> 0.978 (57 -> 39 ml outside ``ch2bet``); the held-out ITK subject's
  skull-on scan (2x2x3 mm) vs its reference mask: 116 -> 2.5 ml outside the brain, Dice 0.899 -> 0.906 (the
  refined mask leaves out CSF the reference includes); 0.2 s there, ~2.5 s CPU on a 1 mm head
  (docs/benchmarks.md, docs/data.md).

Everything here works on the canonical RAS grid of a :class:`app.io.Study` (``data``, ``affine``); SimpleITK
images are built in its LPS physical space.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from app.errors import StudyError
from app.foreground import fill_holes

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: the registration runs on a copy with voxels of this size (mm)
REG_MM = 4.0
#: N4 runs on a copy with voxels of about this size (mm). Measured on Colin27 (1 mm) with two known smooth fields
#: (log-field error std inside the brain, before 0.130 / 0.138): 6 mm and 20+20 iterations 0.071 / 0.084 in
#: 1.5-1.9 s; 8 mm and 30+30 iterations 0.052 / 0.067 in 1.2 s (a bias field is far smoother than 8 mm; the fit's
#: cost follows the number of voxels, the correction the iterations)
N4_MM = 8.0
#: N4 iterations per fitting level (two levels: control-point spacing about FOV/2, then FOV/4)
N4_ITERATIONS = (30, 30)
#: brain volumes outside this range (ml) mean the extraction failed
BRAIN_ML = (800.0, 2300.0)
#: a non-zero part smaller than this (ml) with a constant background is "already skull-stripped"
STRIPPED_MAX_ML = 2300.0

#: intensity refinement of the atlas mask (:func:`refine_brain_mask`), chosen on Colin27 (ch2 vs ch2bet) only:
#: the refined mask stays within REFINE_GROW_MM outside and REFINE_SHRINK_MM inside the atlas mask's surface
REFINE_GROW_MM = 3.0
REFINE_SHRINK_MM = 10.0
#: the dark (CSF, bone) / bright (tissue) classes are found by Otsu inside the atlas mask dilated by this
REFINE_BAND_MM = 8.0
#: tissue is above dark mean + REFINE_FRACTION * (bright mean - dark mean) (0.5: half-way, about Otsu's threshold)
REFINE_FRACTION = 0.5
#: ... and below REFINE_BRIGHT x the 99th percentile of the deep brain (scalp fat is brighter than white matter)
REFINE_BRIGHT = 1.15
#: opening (cuts thin bridges such as vessels and dura to the scalp) and closing (sulci) ball radii
REFINE_OPEN_MM = 2.0
REFINE_CLOSE_MM = 3.0
#: dents in the refined surface narrower than twice this are filled back, within the atlas mask (a dark lesion at
#: the brain's surface -- cavity, cyst, necrosis -- looks like CSF to the threshold and would be cut out)
REFINE_FILL_MM = 12.0


@dataclass
class BrainExtraction:
    mask: np.ndarray  # bool (X, Y, Z) on the study's canonical grid
    status: str  # "atlas", "already-stripped", "failed", "skipped"
    detail: str = ""
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("atlas", "already-stripped")

    def record(self) -> dict:
        return {
            "status": self.status,
            "detail": self.detail,
            "seconds": round(self.seconds, 2),
            "volume_ml": self.metrics.get("volume_ml"),
            **{k: v for k, v in self.metrics.items() if k != "volume_ml"},
        }


def _sitk():
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover - a dependency of the app
        raise StudyError("SimpleITK is not installed (pip install SimpleITK); or use --no-skull-strip") from None
    return sitk


def set_threads(n: int | None) -> None:
    """Limit SimpleITK/ITK to ``n`` threads (None: ITK's default)."""
    if n:
        _sitk().ProcessObject_SetGlobalDefaultNumberOfThreads(int(n))


def to_sitk(volume: np.ndarray, affine: np.ndarray):
    """A (X, Y, Z) array with a RAS voxel->world affine -> a SimpleITK image in LPS physical space."""
    sitk = _sitk()
    a = _LPS @ np.asarray(affine, dtype=np.float64)
    sp = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0)))
    img.SetSpacing([float(v) for v in sp])
    img.SetOrigin([float(v) for v in a[:3, 3]])
    img.SetDirection([float(v) for v in (a[:3, :3] / sp).ravel()])
    return img


def from_sitk(img) -> np.ndarray:
    return _sitk().GetArrayFromImage(img).transpose(2, 1, 0)


def _resampled(img, mm: float, smooth: bool = True):
    """``img`` on a grid of ``mm`` voxels covering the same field of view (Gaussian pre-smoothing against
    aliasing)."""
    sitk = _sitk()
    sp = np.array(img.GetSpacing())
    size = [max(1, int(round(n * s / mm))) for n, s in zip(img.GetSize(), sp, strict=True)]
    src = img
    if smooth:
        sig = [float(max(0.0, (mm - s) / 2.0)) for s in sp]
        if max(sig) > 0:
            src = sitk.SmoothingRecursiveGaussian(img, [max(v, 1e-3) for v in sig])
    # keep the physical extent: the first voxel centre moves by half the voxel-size difference
    d = np.array(img.GetDirection()).reshape(3, 3)
    origin = np.array(img.GetOrigin()) + d @ ((mm - sp) / 2.0)
    return sitk.Resample(
        src,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        origin.tolist(),
        [mm] * 3,
        img.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a set of values (the between-class variance maximum of their histogram)."""
    hist, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def head_mask(volume: np.ndarray) -> np.ndarray:
    """The head (or brain) as opposed to the air around it: Otsu threshold of the volume, largest connected part,
    holes filled slice by slice and in 3D."""
    from scipy import ndimage as ndi

    v = np.asarray(volume, dtype=np.float32)
    thr = otsu(v[v > v.min()]) if np.any(v > v.min()) else float(v.min())
    m = v > thr
    lab, n = ndi.label(m)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    m = ndi.binary_closing(m, iterations=2)
    for k in range(m.shape[2]):
        m[:, :, k] = fill_holes(m[:, :, k])
    return fill_holes(m)


# --------------------------------------------------------------------------------------------------- N4


def n4_correct(volume: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """N4 bias-field correction. Returns (corrected volume, facts). The field is fitted on a copy with voxels of
    :data:`N4_MM` inside ``mask`` (default: the head), evaluated there and interpolated linearly onto the full grid;
    voxels outside the mask are divided by it too."""
    sitk = _sitk()
    t0 = time.perf_counter()
    v = np.asarray(volume, dtype=np.float32)
    lo = float(v.min())
    shifted = v - lo + 1.0 if lo <= 0 else v  # N4 works in log space: strictly positive input
    full = to_sitk(shifted, affine)
    small = _resampled(full, max(N4_MM, min(full.GetSpacing())), smooth=True)
    if mask is None:  # the head, found on the small copy (cheap)
        small_mask = sitk.GetImageFromArray(head_mask(sitk.GetArrayFromImage(small)).astype(np.uint8))
        small_mask.CopyInformation(small)
    else:
        small_mask = sitk.Resample(
            to_sitk(np.asarray(mask, np.float32), affine),
            small,
            sitk.Transform(),
            sitk.sitkLinear,
            0.0,
            sitk.sitkFloat32,
        )
        small_mask = sitk.Cast(small_mask > 0.5, sitk.sitkUInt8)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(N4_ITERATIONS))
    n4.SetConvergenceThreshold(1e-4)
    n4.Execute(small, small_mask)
    # the field is smooth: evaluate it on the small grid, then interpolate linearly onto the full grid
    log_small = n4.GetLogBiasFieldAsImage(small)
    log_field = from_sitk(
        sitk.Resample(log_small, full, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)
    ).astype(np.float32)
    field_ = np.exp(log_field)
    out = (shifted / field_).astype(np.float32)
    if lo <= 0:
        out = out + lo - 1.0
    inside = from_sitk(small_mask) > 0
    inside = np.exp(from_sitk(log_small))[inside] if inside.any() else field_.ravel()
    facts = {
        "method": "N4 (SimpleITK)",
        "fit_grid_mm": round(float(small.GetSpacing()[0]), 2),
        "field_range": [round(float(np.percentile(inside, 1)), 3), round(float(np.percentile(inside, 99)), 3)],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return out, facts


# ------------------------------------------------------------------------------------ already stripped?


def looks_skull_stripped(volume: np.ndarray, spacing) -> tuple[bool, str]:
    """(True, why) when the volume is already skull-stripped: a non-zero part of brain size (< 2.3 l) inside an
    exactly constant background covering at least 30 % of the field of view, and no bright rim (scalp fat)
    on its surface. Otherwise (False, why)."""
    from scipy import ndimage as ndi

    v = np.asarray(volume, dtype=np.float32)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    bg_value = float(v.min())
    bg = v == bg_value
    bg_frac = float(bg.mean())
    fg = ~bg
    fg_ml = float(fg.sum()) * voxel_ml
    if bg_frac < 0.3:
        return False, f"background not constant ({bg_frac:.0%} of voxels at the minimum)"
    if fg_ml > STRIPPED_MAX_ML:
        return False, f"non-zero part {fg_ml:.0f} ml (a brain is under {STRIPPED_MAX_ML:.0f} ml)"
    # bright rim: the outer 4 mm of the non-zero part against its interior
    it = max(1, int(round(4.0 / max(min(spacing), 0.1))))
    inner = ndi.binary_erosion(fg, iterations=it)
    rim = fg & ~inner
    if inner.sum() < 100 or rim.sum() < 100:
        return False, "non-zero part too small to judge"
    rim_hi = float(np.percentile(v[rim], 95))
    inner_hi = float(np.percentile(v[inner], 95))
    if rim_hi > 1.1 * inner_hi:
        return False, f"bright rim around the non-zero part (scalp?): rim p95 {rim_hi:.3g} vs interior {inner_hi:.3g}"
    return True, f"non-zero part {fg_ml:.0f} ml in a constant background ({bg_frac:.0%} of voxels)"


# --------------------------------------------------------------------------------------- registration


#: (shift along S in mm, scale) of the similarity starts
SIMILARITY_STARTS = ((0.0, 1.0), (-12.0, 1.0), (12.0, 1.0), (0.0, 0.9))
#: refine the best similarity start at 4 mm before the affine stage (whose own first level is at 8 mm). Off:
#: measured on Colin27 and the ITK subject, each unrotated and rotated by 12, -12 (pitch), 10 (roll) and 15 (yaw)
#: degrees, extraction Dice against their reference masks min 0.886 / mean 0.9384 with it, 0.873 / 0.9376
#: without, 0.5-0.7 s less per volume
SIMILARITY_REFINE = False
#: fraction of the fixed image's voxels the Mattes metric samples per iteration (4 mm levels)
SAMPLING = 0.2
AFFINE_ITERATIONS = 80


def _upper_centre(mask_img, depth_mm: float) -> tuple[np.ndarray, float]:
    """(centre of the part of a mask within ``depth_mm`` of its top, its top's height), LPS mm (S is +z)."""
    sitk = _sitk()
    arr = sitk.GetArrayFromImage(mask_img) > 0  # (z, y, x) index order
    idx = np.argwhere(arr)[:, ::-1].astype(np.float64)  # (i, j, k)
    if idx.size == 0:
        raise RuntimeError("empty mask")
    d = np.array(mask_img.GetDirection()).reshape(3, 3)
    pts = np.array(mask_img.GetOrigin()) + (idx * np.array(mask_img.GetSpacing())) @ d.T
    top = float(pts[:, 2].max())
    upper = pts[pts[:, 2] > top - depth_mm]
    return upper.mean(axis=0), top


def _register(fixed, moving, moving_mask, deformable: bool = True):
    """Similarity -> affine -> coarse B-spline, Mattes MI. Returns (transform fixed->moving, facts)."""
    sitk = _sitk()
    facts: dict = {}

    def method(shrink, sigmas, sampling=0.2):
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(32)
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(sampling, seed=17)
        r.SetMetricMovingMask(moving_mask)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetShrinkFactorsPerLevel(shrink)
        r.SetSmoothingSigmasPerLevel(sigmas)
        r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        return r

    # 1. similarity, initialised by the tops of the head and of the template's brain (12 mm of scalp and skull
    # between them) and the left-right / front-back centres of their upper parts (whatever the field of view
    # holds below: neck, shoulders)
    fixed_head = sitk.Cast(sitk.OtsuThreshold(fixed, 0, 1), sitk.sitkUInt8)
    cf, top_f = _upper_centre(fixed_head, 90.0)
    cm, top_m = _upper_centre(moving_mask, 80.0)
    centre = cf.copy()
    centre[2] = top_f - 12.0 - 50.0
    # several starts at 8 mm (the head's top is a rough guide: hair, FOV cut-offs), the best one refined at 4 mm
    best = None
    for dz, scale in SIMILARITY_STARTS:
        tx = sitk.Similarity3DTransform()
        tx.SetCenter(centre.tolist())
        shift = cm - cf
        shift[2] = top_m - (top_f - 12.0) + dz
        tx.SetTranslation(shift.tolist())
        tx.SetScale(scale)
        r = method([2], [4.0])
        r.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-2, 40, relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetInitialTransform(tx, inPlace=True)
        r.Execute(fixed, moving)
        value = float(r.GetMetricValue())
        if best is None or value < best[0]:
            best = (value, tx, dz, scale)
    init = best[1]
    facts["similarity_start"] = {"dz_mm": best[2], "scale": best[3], "mi": round(best[0], 4)}
    if SIMILARITY_REFINE:
        r = method([1], [1.0], sampling=SAMPLING)
        r.SetOptimizerAsRegularStepGradientDescent(0.5, 1e-3, 60, relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetInitialTransform(init, inPlace=True)
        r.Execute(fixed, moving)
        facts["mi_similarity"] = round(float(r.GetMetricValue()), 4)
    # 2. affine from the similarity
    aff = sitk.AffineTransform(3)
    aff.SetCenter(init.GetCenter())
    aff.SetMatrix(init.GetMatrix())
    aff.SetTranslation(init.GetTranslation())
    r = method([2, 1], [2.0, 0.0], sampling=SAMPLING)
    r.SetOptimizerAsRegularStepGradientDescent(
        0.5, 1e-3, AFFINE_ITERATIONS, relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6
    )
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetInitialTransform(aff, inPlace=True)
    r.Execute(fixed, moving)
    facts["mi_affine"] = round(float(r.GetMetricValue()), 4)
    if not deformable:
        return aff, facts
    # 3. coarse B-spline on top of the affine
    bs = sitk.BSplineTransformInitializer(fixed, [4, 4, 4], order=3)
    r = method([1], [0.0], sampling=0.1)
    r.SetMovingInitialTransform(aff)
    r.SetInitialTransform(bs, inPlace=True)
    r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=15, maximumNumberOfCorrections=5)
    r.Execute(fixed, moving)
    facts["mi_bspline"] = round(float(r.GetMetricValue()), 4)
    return sitk.CompositeTransform([aff, bs]), facts


def extract_brain(
    volume: np.ndarray, affine: np.ndarray, deformable: bool = False, refine: bool = True
) -> BrainExtraction:
    """Register the shipped atlas to a skull-on T1-like volume and carry its brain mask onto the volume's grid;
    on a T1 study the mask is then refined by the study's own intensities (:func:`refine_brain_mask`; ``refine``
    False: the atlas mask as it is)."""
    from scipy import ndimage as ndi

    from app.data.atlas import load_atlas

    sitk = _sitk()
    t0 = time.perf_counter()
    t1, brain, taff = load_atlas()
    v = np.asarray(volume, dtype=np.float32)
    full = to_sitk(v, affine)
    fixed = _resampled(full, REG_MM)
    fa = sitk.GetArrayFromImage(fixed)
    lo = float(fa.min())
    pos = fa[fa > lo]
    top = float(np.percentile(pos, 99.5)) if pos.size else lo + 1.0
    fixed = sitk.Clamp(sitk.ShiftScale(fixed, -lo, 1.0 / max(top - lo, 1e-6)), sitk.sitkFloat32, 0.0, 1.0)
    moving = to_sitk(t1, taff)
    mmask = sitk.Cast(to_sitk(ndi.binary_dilation(brain, iterations=4).astype(np.float32), taff) > 0.5, sitk.sitkUInt8)
    try:
        tx, facts = _register(fixed, moving, mmask, deformable)
    except RuntimeError as exc:  # ITK: e.g. too few samples inside the mask
        from app.io.study import one_line

        return BrainExtraction(
            np.ones(v.shape, bool), "failed", f"registration failed ({one_line(exc, 160)})", time.perf_counter() - t0
        )
    warped = sitk.Resample(to_sitk(brain.astype(np.float32), taff), full, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    mask = from_sitk(warped) > 0.5
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(np.argmax(sizes))
    mask = fill_holes(mask)
    # the study's contrast from its intensities in the atlas's tissue classes (on the 4 mm copy)
    from app.data.domain import contrast_from_tissues

    t_small = from_sitk(sitk.Resample(moving, fixed, tx, sitk.sitkLinear, np.nan, sitk.sitkFloat32))
    b_small = from_sitk(sitk.Resample(to_sitk(brain.astype(np.float32), taff), fixed, tx, sitk.sitkLinear, 0.0)) > 0.5
    name, levels = contrast_from_tissues(from_sitk(fixed), t_small, b_small)
    facts["tissue_contrast"] = name
    facts["tissue_levels"] = levels
    # the registration is judged on the atlas mask itself (a refinement could make a template that landed on the
    # wrong structure look plausible), the refinement then on its own result
    facts["refine"] = None  # T2 / unknown contrast (or refine=False): the atlas mask as it is
    res = BrainExtraction(mask, "atlas", "MNI152 2009a atlas registration", 0.0, facts)
    _judge(res, v, affine)
    if res.ok and refine and name == "T1":
        spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
        t_ref = time.perf_counter()
        refined, rf = refine_brain_mask(v, mask, spacing)
        rf["seconds"] = round(time.perf_counter() - t_ref, 2)
        rf["atlas_volume_ml"] = res.metrics["volume_ml"]
        trial = BrainExtraction(refined, "atlas", res.detail + " + intensity refinement", 0.0, {**facts, "refine": rf})
        _judge(trial, v, affine)
        if trial.ok:
            res = trial
        else:  # an implausible refinement: the atlas mask stands, and the record says why
            rf["status"] = f"rejected ({trial.detail}): the atlas mask is used"
            res.metrics["refine"] = rf
    res.seconds = time.perf_counter() - t0
    return res


def _signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Signed distance (mm) to the surface of a (X, Y, Z) mask: negative inside, positive outside (Maurer)."""
    sitk = _sitk()
    img = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))  # read as (z, y, x): spacing reversed
    img.SetSpacing([float(s) for s in list(spacing)[::-1]])
    d = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return sitk.GetArrayFromImage(d)


def _ball(radius_mm: float, spacing) -> np.ndarray:
    """A ball of ``radius_mm`` as a structuring element on a grid of ``spacing`` mm (an ellipsoid in voxels)."""
    n = [int(np.floor(radius_mm / s)) for s in spacing]
    g = np.meshgrid(*[np.arange(-k, k + 1) * s for k, s in zip(n, spacing, strict=True)], indexing="ij")
    return sum(x * x for x in g) <= radius_mm * radius_mm + 1e-6


def _morph(op, mask: np.ndarray, structure: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``op`` (scipy's binary_opening / binary_closing) computed only at ``where`` (elsewhere ``mask`` as it is;
    half the time), with the array's edges continued outward, so a mask that touches the field of view's edge is
    not eaten away there."""
    r = [(s // 2, s // 2) for s in structure.shape]
    out = op(np.pad(mask, r, mode="edge"), structure=structure, mask=np.pad(where, r, mode="edge"))
    return out[tuple(slice(k, k + n) for (k, _), n in zip(r, mask.shape, strict=True))]


def _dents(mask: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """The voxels a closing with a ball of ``radius_mm`` adds to ``mask`` (its dents narrower than the ball),
    found on a grid of about 2 mm (blocks half full are in; a ball this big is slow as a structuring element, so
    the closing is done with distance maps) and returned on ``mask``'s grid."""
    f = [max(1, int(round(2.0 / s))) for s in spacing]
    shape = mask.shape
    pad = [(0, (-n) % k) for n, k in zip(shape, f, strict=True)]
    m = np.pad(mask, pad).astype(np.float32)
    c = [n // k for n, k in zip(m.shape, f, strict=True)]
    coarse = m.reshape(c[0], f[0], c[1], f[1], c[2], f[2]).mean(axis=(1, 3, 5)) >= 0.5
    csp = [s * k for s, k in zip(spacing, f, strict=True)]
    grown = _signed_distance(coarse, csp) <= radius_mm
    added = (_signed_distance(grown, csp) < -radius_mm + 0.5 * min(csp)) & ~coarse
    full = added.repeat(f[0], 0).repeat(f[1], 1).repeat(f[2], 2)
    return full[: shape[0], : shape[1], : shape[2]]


def refine_brain_mask(volume: np.ndarray, mask: np.ndarray, spacing) -> tuple[np.ndarray, dict]:
    """The atlas brain ``mask`` fitted to the study's own T1 intensities (``volume``: bias-corrected), in the
    spirit of FSL BET's intensity thresholds made simple. Returns (refined mask, facts).

    1. Otsu splits the intensities inside the atlas mask dilated by :data:`REFINE_BAND_MM` into a dark class
       (CSF, bone, the dark band around the brain) and a bright one (grey and white matter, scalp); tissue is
       above half-way between their means (:data:`REFINE_FRACTION`) and below :data:`REFINE_BRIGHT` x the deep
       brain's 99th percentile (bright scalp fat).
    2. An opening (:data:`REFINE_OPEN_MM`) cuts thin bridges; the tissue component holding the deep brain
       (the atlas mask eroded by :data:`REFINE_SHRINK_MM`) is kept, everything else dropped (the scalp beyond
       the dark skull band); a closing (:data:`REFINE_CLOSE_MM`) and hole filling take the sulci back in; dents
       narrower than 2 x :data:`REFINE_FILL_MM` are filled back inside the atlas mask (a CSF-dark lesion at the
       brain's surface stays in: on Colin27 with style B lesions, three seeds, 95.9 % of the lesion voxels were
       kept without the fill, 99.3 % with it; ``scripts/brain_refine_trial.py``). A dark lesion's outermost
       ~3 mm where it opens onto the CSF cannot be told from CSF and is still lost.
    3. The result is bounded: never more than :data:`REFINE_GROW_MM` outside the atlas mask's surface, never
       less than its part deeper than :data:`REFINE_SHRINK_MM` -- a failed refinement cannot be worse than that.
    """
    from scipy import ndimage as ndi

    sp = tuple(float(s) for s in spacing)
    m = np.asarray(mask, bool)
    pad = [int(np.ceil((max(REFINE_GROW_MM, REFINE_BAND_MM) + REFINE_CLOSE_MM) / s)) + 2 for s in sp]
    idx = np.argwhere(m)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + np.asarray(pad) + 1, m.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    mb, vb = m[box], np.asarray(volume, np.float32)[box]
    d = _signed_distance(mb, sp)
    outer, inner, band = d <= REFINE_GROW_MM, d < -REFINE_SHRINK_MM, d <= REFINE_BAND_MM
    facts: dict = {"grow_mm": REFINE_GROW_MM, "shrink_mm": REFINE_SHRINK_MM, "fill_mm": REFINE_FILL_MM}
    if inner.sum() < 100:  # too small a brain (or too coarse a grid) to refine: the atlas mask as it is
        facts["status"] = "skipped: no deep brain"
        return m, facts
    w = vb[band]
    split = otsu(w) if float(w.max()) > float(w.min()) else float(w.max())
    if not (w <= split).any() or not (w > split).any():  # a uniform image: nothing to classify
        facts["status"] = "skipped: no intensity contrast"
        return m, facts
    dark, bright = float(w[w <= split].mean()), float(w[w > split].mean())
    t_lo = dark + REFINE_FRACTION * (bright - dark)
    t_hi = REFINE_BRIGHT * float(np.percentile(vb[inner], 99))
    tissue = (vb > t_lo) & (vb < t_hi) & outer
    # the morphology matters only where the result is not fixed (between the bounds, plus the closing's reach)
    reach = REFINE_CLOSE_MM + max(sp)
    where = (d <= REFINE_GROW_MM + reach) & (d >= -REFINE_SHRINK_MM - reach)
    tissue = _morph(ndi.binary_opening, tissue, _ball(REFINE_OPEN_MM, sp), where) | inner
    lab, _n = ndi.label(tissue)
    keep = np.unique(lab[inner])
    keep = keep[keep > 0]
    sizes = np.bincount(lab.ravel())
    tissue = (lab == keep[np.argmax(sizes[keep])]) | inner
    tissue = _morph(ndi.binary_closing, tissue, _ball(REFINE_CLOSE_MM, sp), where)
    tissue = (fill_holes(tissue) & outer) | inner
    if REFINE_FILL_MM > 0:
        tissue |= _dents(tissue, sp, REFINE_FILL_MM) & mb
    out = np.zeros_like(m)
    out[box] = tissue
    voxel_ml = float(np.prod(sp)) / 1000.0
    facts.update(
        status="refined",
        threshold=round(t_lo, 4),
        bright_cut=round(t_hi, 4),
        removed_ml=round(float((m & ~out).sum()) * voxel_ml, 1),
        added_ml=round(float((out & ~m).sum()) * voxel_ml, 1),
    )
    return out, facts


#: the study's levels in the template's WM, GM and CSF (relative to the largest) must spread at least this much
TISSUE_SPREAD_MIN = 0.1
#: the tissue just outside the brain that :func:`_judge` compares the brain with: within this distance (mm)
JUDGE_SHELL_MM = 6.0


def _shell(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    """The voxels outside ``mask`` within ``mm`` of it (dilations by the face-connected cross, as many as ``mm``
    is voxels along the finest axis), computed in the mask's bounding box grown by that much, not over the
    whole volume."""
    from scipy import ndimage as ndi

    it = max(1, int(round(mm / max(float(min(spacing)), 0.1))))
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - it, 0), min(int(hit[-1]) + it + 1, mask.shape[axis])))
    box = tuple(box)
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = ndi.binary_dilation(mask[box], iterations=it) & ~mask[box]
    return out


def _judge(res: BrainExtraction, volume: np.ndarray, affine: np.ndarray) -> None:
    """Mark an implausible extraction as failed: brain volume outside 0.8-2.3 l, a brain no brighter than the
    tissue just outside it, or no difference between the template's tissue classes in the study (the template
    landed on the wrong structure)."""
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    ml = float(res.mask.sum()) * float(np.prod(spacing)) / 1000.0
    res.metrics["volume_ml"] = round(ml, 1)
    problems = []
    if not (BRAIN_ML[0] <= ml <= BRAIN_ML[1]):
        problems.append(f"brain volume {ml:.0f} ml outside {BRAIN_ML[0]:.0f}-{BRAIN_ML[1]:.0f} ml")
    elif res.mask.any():
        shell = _shell(res.mask, spacing, JUDGE_SHELL_MM)
        inside_med = float(np.median(volume[res.mask]))
        shell_med = float(np.median(volume[shell])) if shell.any() else 0.0
        res.metrics["contrast"] = round((inside_med - shell_med) / max(abs(inside_med), 1e-6), 3)
        # the mask's surface should sit on an edge: in T1 the brain is brighter than the CSF + bone just outside
        # it (in T2 darker than the CSF); no difference means the template landed on the wrong structure
        if abs(res.metrics["contrast"]) < 0.15:
            problems.append(f"no intensity edge at the brain's surface (contrast {res.metrics['contrast']:.2f})")
    levels = res.metrics.get("tissue_levels") or {}
    if len(levels) == 3 and max(levels.values()) - min(levels.values()) < TISSUE_SPREAD_MIN:
        # a brain has tissue classes: the study's intensities in the template's WM, GM and CSF differ (measured:
        # spread 0.28-0.32 on real T1 heads, 0.18 on a T2-like inversion; 0.04 for a bright box in noise, where
        # the template can still land on an edge)
        spread = max(levels.values()) - min(levels.values())
        problems.append(f"no tissue contrast inside the brain mask (WM/GM/CSF levels within {spread:.0%})")
    if problems:
        res.status = "failed"
        res.detail = "; ".join(problems)
