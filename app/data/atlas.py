"""The brain atlas that ships with the app (``resources/atlas/``): the MNI ICBM152 2009a symmetric T1 template at
2 mm and its whole-brain mask, used by :mod:`app.data.brain` to find the brain in skull-on studies.

Made by ``python scripts/make_atlas.py`` (:func:`make_atlas`) from the copy of the template shipped in the
nilearn wheel (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``, fetched into the
cache by :mod:`app.data.sources`; nothing is downloaded at run time). The mask follows
``nilearn.datasets.load_mni152_brain_mask``: the template scaled to [0, 1] and thresholded at 0.2 (then holes
filled), computed at 1 mm and block-averaged to 2 mm like the image. Attribution: resources/atlas/ATTRIBUTION.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from app.bundled import bundled_dir
from app.errors import StudyError

#: the atlas folder (MATCHGEN_ATLAS overrides it), found by :mod:`app.bundled`
ATLAS_DIR = bundled_dir("atlas")
ATLAS_T1 = "mni152_2009a_t1_2mm.nii.gz"
ATLAS_MASK = "mni152_2009a_brainmask_2mm.nii.gz"
NILEARN_T1 = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
#: nilearn's load_mni152_brain_mask threshold on the template scaled to [0, 1]
MASK_THRESHOLD = 0.2


def _block_mean2(vol: np.ndarray) -> np.ndarray:
    pad = [(0, s % 2) for s in vol.shape]
    v = np.pad(vol.astype(np.float32), pad, mode="edge")
    x, y, z = (s // 2 for s in v.shape)
    return v.reshape(x, 2, y, 2, z, 2).mean(axis=(1, 3, 5))


def make_atlas(out_dir: str | os.PathLike | None = None, log=print) -> tuple[Path, Path]:
    """Write the 2 mm template (uint8) and its brain mask (uint8 0/1) into ``out_dir`` (default ATLAS_DIR)."""
    import nibabel as nib
    from scipy import ndimage as ndi

    from app.data.sources import path_of
    from app.io import atomic_save_nifti

    out = Path(out_dir or ATLAS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    img = nib.load(str(path_of("nilearn", NILEARN_T1, log)))
    t1 = np.asarray(img.dataobj, dtype=np.float32)
    t1 /= t1.max()
    mask1 = ndi.binary_fill_holes(t1 > MASK_THRESHOLD)
    t1_2 = _block_mean2(t1)
    mask_2 = _block_mean2(mask1.astype(np.float32)) >= 0.5
    # voxel (i, j, k) of the 2 mm grid is the centre of 1 mm voxels 2i, 2i+1: index 2i + 0.5
    aff = img.affine @ np.array([[2, 0, 0, 0.5], [0, 2, 0, 0.5], [0, 0, 2, 0.5], [0, 0, 0, 1.0]])
    t1_u8 = np.clip(np.rint(t1_2 * 255), 0, 255).astype(np.uint8)
    p1 = atomic_save_nifti(t1_u8, aff, out / ATLAS_T1)
    p2 = atomic_save_nifti(mask_2.astype(np.uint8), aff, out / ATLAS_MASK)
    log(f"wrote {p1} {t1_u8.shape} and {p2} ({mask_2.sum() * 8 / 1000:.0f} ml brain)")
    return p1, p2


def load_atlas() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(template T1 in [0, 1] float32, brain mask bool, affine RAS) of the shipped atlas."""
    import nibabel as nib

    t1p, mp = ATLAS_DIR / ATLAS_T1, ATLAS_DIR / ATLAS_MASK
    if not (t1p.is_file() and mp.is_file()):
        raise StudyError(
            f"the brain atlas is missing from {ATLAS_DIR} (run: python scripts/make_atlas.py); "
            "or skip brain extraction with --no-skull-strip"
        )
    t1 = nib.load(str(t1p))
    m = nib.load(str(mp))
    return (
        np.asarray(t1.dataobj, dtype=np.float32) / 255.0,
        np.asarray(m.dataobj) > 0,
        np.asarray(t1.affine, dtype=np.float64),
    )
