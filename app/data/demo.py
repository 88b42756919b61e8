"""The bundled demo study (``resources/demo/``), named here in one place, and how it is made.

``demo_t1.nii.gz``: the ITK KmeansTest subject (a real T1 brain MRI, 128x128x62 at 2x2x3 mm, stored in LSA
orientation: its slices on disk are coronal), skull-stripped with its own brain mask, with six synthetic lesions
(:func:`app.data.lesions.insert_lesions`, seed ``DEMO_SEED``). ``demo_t1_mask.nii.gz``: their ground truth on
the same grid. Made by ``python scripts/make_demo.py`` from the Debian package insighttoolkit5-examples
(Apache-2.0; see resources/demo/ATTRIBUTION.md). This subject is also the brain-proxy val/test subject, so
the demo shows a brain the bundled models never trained on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from app.bundled import bundled_dir

#: the demo folder (MATCHGEN_DEMO overrides it), found by :mod:`app.bundled`
DEMO_DIR = bundled_dir("demo")
DEMO_STUDY = DEMO_DIR / "demo_t1.nii.gz"
DEMO_MASK = DEMO_DIR / "demo_t1_mask.nii.gz"
DEMO_SEED = 20260
N_LESIONS = 6


def make_demo(out_dir: str | os.PathLike | None = None, log=print) -> tuple[Path, Path]:
    """Write the demo study and its mask (uint8 on the subject's original LSA grid and affine)."""
    from app.data.brain_proxy import held_out_subject
    from app.data.lesions import insert_lesions
    from app.io import atomic_save_nifti

    out = Path(out_dir or DEMO_DIR)
    out.mkdir(parents=True, exist_ok=True)
    study, brain = held_out_subject(log)
    rng = np.random.default_rng(DEMO_SEED)
    vol, mask, recs = insert_lesions(study.data, brain, study.spacing, rng, n_lesions=N_LESIONS, radius_mm=(3.0, 14.0))
    vol_u8 = np.clip(np.rint(vol), 0, 255).astype(np.uint8)
    study_path = atomic_save_nifti(study.to_original(vol_u8), study.original_affine, out / DEMO_STUDY.name)
    mask_path = atomic_save_nifti(study.to_original(mask.astype(np.uint8)), study.original_affine, out / DEMO_MASK.name)
    for r in recs:
        log(f"lesion {r.kind:<8} r={r.radius_mm:5.1f} mm voxels={r.voxels:5d} centre={r.centre}")
    return study_path, mask_path
