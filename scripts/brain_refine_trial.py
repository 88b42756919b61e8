"""Issue 11, intensity refinement of the atlas brain mask (app.data.brain.refine_brain_mask): the parameters were
chosen on Colin27 only (ch2 vs ch2bet); the pydeface mean head (no reference mask) is a check of the brain volume.
Also: how much of style B lesions inserted into Colin27 (inside ch2bet, seeds 1-3, six each) the mask keeps --
dark lesions look like CSF to the threshold. An experiment, not shipped:

    python scripts/brain_refine_trial.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

VARIANTS = {  # name: (REFINE_FRACTION, REFINE_FILL_MM); None: the affine atlas mask as it is
    "atlas (affine)": None,
    "refined, fraction 0.4, no fill": (0.4, 0.0),
    "refined, fraction 0.5, no fill": (0.5, 0.0),
    "refined, fraction 0.5, fill 12 mm (shipped)": (0.5, 12.0),
}


def main():
    import app.data.brain as B
    from app.core.metrics import dice
    from app.data.lesions_b import insert_lesions_b
    from app.data.sources import path_of
    from app.io import load_study

    B.set_threads(1)
    ch2 = load_study(path_of("mricron-data", "usr/share/mricron/templates/ch2.nii.gz"))
    ref = load_study(path_of("mricron-data", "usr/share/mricron/templates/ch2bet.nii.gz")).data > 0
    v, _ = B.n4_correct(ch2.data, ch2.affine)
    atlas = B.extract_brain(v, ch2.affine, refine=False).mask
    lesioned = [insert_lesions_b(v, ref, ch2.spacing, np.random.default_rng(s), 6)[:2] for s in (1, 2, 3)]
    mean = load_study(path_of("pydeface", "pydeface/data/mean_reg2mean.nii.gz"))
    mv, _ = B.n4_correct(mean.data, mean.affine)
    matlas = B.extract_brain(mv, mean.affine, refine=False).mask
    print(f"Colin27 ch2bet {ref.sum() / 1000:.0f} ml")
    for name, var in VARIANTS.items():
        t0 = time.perf_counter()
        if var is None:
            m, pm, kept = atlas, matlas, [int((atlas & lm).sum()) for _, lm in lesioned]
        else:
            B.REFINE_FRACTION, B.REFINE_FILL_MM = var
            m = B.refine_brain_mask(v, atlas, ch2.spacing)[0]
            pm = B.refine_brain_mask(mv, matlas, mean.spacing)[0]
            kept = [int((B.refine_brain_mask(lv, atlas, ch2.spacing)[0] & lm).sum()) for lv, lm in lesioned]
        total = sum(int(lm.sum()) for _, lm in lesioned)
        ml = float(np.prod(mean.spacing)) / 1000
        print(f"{name:<44} Colin27 Dice {dice(m, ref):.4f}, {m.sum() / 1000:.0f} ml, {(m & ~ref).sum() / 1000:.1f} ml "
              f"outside ch2bet; lesion voxels kept {sum(kept)} of {total} ({sum(kept) / total:.1%}); pydeface mean "
              f"{pm.sum() * ml:.0f} ml; {time.perf_counter() - t0:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
