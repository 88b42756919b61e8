"""Issue 11, deformable stage: does a deformable stage after the shipped affine atlas registration improve brain
extraction? Measured on Colin27 (ch2 vs its ch2bet) and, without a reference, the brain volume on the pydeface
mean head. Variants: affine (shipped); the coarse B-spline (4x4x4 mesh, Mattes MI, moving-mask sampling) of
``extract_brain(deformable=True)``; symmetric diffeomorphic demons on the N4-corrected image at 4 mm, after
histogram matching of the template to the study inside the affine brain, the field smoothed at 2 voxels (8 mm)
and only its part within 12 mm of the affine brain's surface used. An experiment, not shipped:

    python scripts/deformable_trial.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def variants(vol, affine):
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    from app.data import brain as B
    from app.data.atlas import load_atlas

    t1, brain, taff = load_atlas()
    full = B.to_sitk(vol, affine)
    fixed = B._resampled(full, B.REG_MM)
    fa = sitk.GetArrayFromImage(fixed)
    lo = float(fa.min())
    top = float(np.percentile(fa[fa > lo], 99.5))
    fixed = sitk.Clamp(sitk.ShiftScale(fixed, -lo, 1.0 / max(top - lo, 1e-6)), sitk.sitkFloat32, 0.0, 1.0)
    moving = B.to_sitk(t1, taff)
    dil = ndi.binary_dilation(brain, iterations=4).astype(np.float32)
    mmask = sitk.Cast(B.to_sitk(dil, taff) > 0.5, sitk.sitkUInt8)
    bimg = B.to_sitk(brain.astype(np.float32), taff)

    def carry(tx):
        m = B.from_sitk(sitk.Resample(bimg, full, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)) > 0.5
        lab, n = ndi.label(m)
        if n > 1:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            m = lab == int(np.argmax(sizes))
        return ndi.binary_fill_holes(m)

    out = {}
    t0 = time.perf_counter()
    aff, _ = B._register(fixed, moving, mmask, deformable=False)
    out["affine"] = (carry(aff), time.perf_counter() - t0)
    t0 = time.perf_counter()
    bs, _ = B._register(fixed, moving, mmask, deformable=True)
    out["bspline 4x4x4"] = (carry(bs), time.perf_counter() - t0)
    # demons on top of the affine: the template resampled onto the 4 mm study grid, intensities matched
    t0 = time.perf_counter()
    aff2, _ = B._register(fixed, moving, mmask, deformable=False)
    warped = sitk.Resample(moving, fixed, aff2, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    wbrain = sitk.Resample(bimg, fixed, aff2, sitk.sitkLinear, 0.0, sitk.sitkFloat32) > 0.5
    band = sitk.Cast(sitk.BinaryDilate(wbrain, [3, 3, 3]), sitk.sitkFloat32)
    matched = sitk.HistogramMatching(warped * band, fixed * band, 64, 7, True)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(40)
    demons.SetStandardDeviations(2.0)
    demons.SetSmoothDisplacementField(True)
    field = demons.Execute(fixed * band, matched)
    arr = sitk.GetArrayFromImage(field)
    near = sitk.GetArrayFromImage(band) > 0
    arr[~near] = 0.0
    f2 = sitk.GetImageFromArray(arr, isVector=True)
    f2.CopyInformation(field)
    dtx = sitk.DisplacementFieldTransform(sitk.Cast(f2, sitk.sitkVectorFloat64))
    out["affine + demons"] = (carry(sitk.CompositeTransform([aff2, dtx])), time.perf_counter() - t0)
    return out


def main():
    from app.core.metrics import dice
    from app.data.brain import n4_correct, set_threads
    from app.data.sources import path_of
    from app.io import load_study

    set_threads(2)
    ch2 = load_study(path_of("mricron-data", "usr/share/mricron/templates/ch2.nii.gz"))
    ref = load_study(path_of("mricron-data", "usr/share/mricron/templates/ch2bet.nii.gz")).data > 0
    v, _ = n4_correct(ch2.data, ch2.affine)
    for name, (m, s) in variants(v, ch2.affine).items():
        ml = m.sum() * np.prod(ch2.spacing) / 1000
        ref_ml = ref.sum() / 1000
        print(f"Colin27 {name:<16} Dice {dice(m, ref):.4f}  volume {ml:.0f} ml (ch2bet {ref_ml:.0f} ml)  {s:.1f} s")
    mean = load_study(path_of("pydeface", "pydeface/data/mean_reg2mean.nii.gz"))
    v, _ = n4_correct(mean.data, mean.affine)
    for name, (m, s) in variants(v, mean.affine).items():
        ml = m.sum() * np.prod(mean.spacing) / 1000
        print(f"pydeface mean {name:<16} volume {ml:.0f} ml  {s:.1f} s")


if __name__ == "__main__":
    main()
