"""Per-lesion detection by lesion size on the benchmark's validation volumes (validation only: never test), for
models at their cards' whole-volume choice (eps, tau; the card's solver, layout, post-processing and component
rule, as ``detect`` applies them). A lesion is a 3-D connected component of a realisation's mask; "found" means
more than 10 % of its voxels flagged.

    python scripts/val_lesion_sizes.py DATA_DIR MODEL [MODEL ...]      # e.g. /work/cache/brain-proxy-v2 dae
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scipy.ndimage as ndi  # noqa: E402
import torch  # noqa: E402

from app.core.detector import Detector  # noqa: E402
from app.data.splits import load_volumes  # noqa: E402
from app.nets.card import card_choices  # noqa: E402
from app.nets.checkpoint import load_checkpoint  # noqa: E402
from app.nets.zoo import resolve_model  # noqa: E402

BINS = (0, 20, 60, 200, None)  # lesion size in voxels of the model grid (2 mm pixels, the block's slices)
FOUND = 0.1


def lesion_hits(det: Detector, eps: float, tau: float, images, masks) -> list[tuple[int, float]]:
    """(size in voxels, fraction detected) of every lesion of every realisation."""
    out = []
    for r in range(images.shape[0]):
        flagged = det.run(images[r], eps).mask(tau)
        labels, n = ndi.label(masks[r] > 0)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        hits = ndi.mean(flagged.astype(np.float64), labels, np.arange(1, n + 1))
        out += [(int(s), float(h)) for s, h in zip(sizes, hits, strict=True)]
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    vols = load_volumes(argv[0], "val")
    print(f"validation volumes: {vols.images.shape[0]} realisations x {vols.images.shape[1]} slices")
    print("| model | eps | tau | " + " | ".join(_bin_name(i) for i in range(len(BINS) - 1)) + " |")
    print("|---|---|---|" + "---|" * (len(BINS) - 1))
    for name in argv[1:]:
        model, card = load_checkpoint(resolve_model(name), "cpu")
        ch = card_choices(card)
        hits = lesion_hits(Detector.from_card(model, card, "cpu", batch_size=16), ch["eps"], ch["tau"],
                           vols.images, vols.masks)  # fmt: skip
        cells = []
        for i in range(len(BINS) - 1):
            sel = [h for s, h in hits if s >= BINS[i] and (BINS[i + 1] is None or s < BINS[i + 1])]
            cells.append(f"{sum(h > FOUND for h in sel)} of {len(sel)} ({np.mean(sel) if sel else 0:.0%} of voxels)")
        print(f"| {Path(name).name} | {ch['eps']:.3g} | {ch['tau']:.3g} | " + " | ".join(cells) + " |")
    return 0


def _bin_name(i: int) -> str:
    hi = BINS[i + 1]
    return f"{BINS[i]}+ voxels found" if hi is None else f"{BINS[i]}-{hi - 1} voxels found"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
