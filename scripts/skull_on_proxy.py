"""The closest honest proxy this machine allows for issue 11's goal (whole-volume Dice on real skull-on studies
with real tumours; no real pathology with a pixel mask exists here, docs/data.md): the held-out subject's own
skull-on head (the ITK KmeansTest T1, 128x128x62 at 2x2x3 mm: real scalp, skull and neck, 3 mm slices) with style B
synthetic lesions (app/data/lesions_b.py, the test-only style) inserted inside its reference brain mask.

    python scripts/skull_on_proxy.py make DIR            # DIR/head_lesions.nii.gz, _mask (GT), _brain (reference)
    python main.py detect DIR/head_lesions.nii.gz --mask DIR/head_lesions_mask.nii.gz --out DIR/detect.nii.gz
    python scripts/skull_on_proxy.py score DIR DIR/detect.nii.gz   # Dice, and flagged voxels outside the brain
    python scripts/skull_on_proxy.py brain     # the brain extraction alone vs the reference mask, atlas / refined

Nothing is tuned on it: fixed seed, default lesion settings, the default model with its card's eps/tau.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SEED = 11
N_LESIONS = 6


def make(out: Path) -> None:
    from app.data.brain_proxy import TEST_MASK, TEST_T1
    from app.data.lesions_b import insert_lesions_b
    from app.data.sources import fetch
    from app.io import atomic_save_nifti, load_study

    root = fetch(TEST_T1[0])
    head = load_study(root / TEST_T1[1])  # skull on: the raw scan, not masked
    brain = load_study(root / TEST_MASK[1]).data > 0.5
    vol, mask, recs = insert_lesions_b(head.data, brain, head.spacing, np.random.default_rng(SEED), N_LESIONS)
    out.mkdir(parents=True, exist_ok=True)
    u8 = np.clip(np.rint(vol), 0, 255).astype(np.uint8)
    for name, arr in (("head_lesions", u8), ("head_lesions_mask", mask), ("head_lesions_brain", brain)):
        atomic_save_nifti(head.to_original(arr.astype(np.uint8)), head.original_affine, out / f"{name}.nii.gz")
    for r in recs:
        print(f"lesion {r.kind:<8} {r.voxels:5d} voxels ({r.voxels * np.prod(head.spacing) / 1000:.2f} ml)")
    print(f"wrote {out}/head_lesions.nii.gz {head.shape} at {head.spacing} mm, {int(mask.sum())} lesion voxels")


def score(out: Path, detected: Path) -> None:
    from scipy import ndimage as ndi

    from app.core.metrics import dice
    from app.io import load_mask, load_study

    study = load_study(out / "head_lesions.nii.gz")
    gt = load_mask(out / "head_lesions_mask.nii.gz", study)
    brain = load_mask(out / "head_lesions_brain.nii.gz", study)
    pred = load_mask(detected, study)
    # the scalp: everything of the head outside the reference brain dilated by 4 mm (CSF and skull excluded)
    margin = ndi.binary_dilation(brain, iterations=2)
    head = study.data > np.percentile(study.data, 60)
    scalp = head & ~margin
    print(f"whole-volume Dice {dice(pred, gt):.4f}: {int(pred.sum())} flagged, {int((pred & gt).sum())} on lesions")
    print(f"flagged outside the reference brain: {int((pred & ~brain).sum())}; on the scalp (head beyond 4 mm of the "
          f"brain): {int((pred & scalp).sum())} of {int(scalp.sum())} scalp voxels")  # fmt: skip


def brain() -> None:
    """N4 + atlas extraction of the raw head, without and with the intensity refinement, against the reference."""
    from app.core.metrics import dice
    from app.data.brain import extract_brain, n4_correct, set_threads
    from app.data.brain_proxy import TEST_MASK, TEST_T1
    from app.data.sources import fetch
    from app.io import load_study

    set_threads(1)
    root = fetch(TEST_T1[0])
    head = load_study(root / TEST_T1[1])
    ref = load_study(root / TEST_MASK[1]).data > 0.5
    ml = float(np.prod(head.spacing)) / 1000
    vol, _ = n4_correct(head.data, head.affine)
    print(f"reference brain {ref.sum() * ml:.0f} ml")
    for refine in (False, True):
        ext = extract_brain(vol, head.affine, refine=refine)
        m = ext.mask
        print(f"{'refined' if refine else 'atlas  '}: {ext.status}, {m.sum() * ml:.0f} ml, Dice {dice(m, ref):.3f}, "
              f"{(m & ~ref).sum() * ml:.1f} ml outside the reference brain, {(ref & ~m).sum() * ml:.1f} ml of it "
              f"missed, {ext.seconds:.1f} s; refine {ext.metrics.get('refine')}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "make":
        make(Path(sys.argv[2]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "score":
        score(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 2 and sys.argv[1] == "brain":
        brain()
    else:
        sys.exit(__doc__)
