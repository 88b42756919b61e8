"""Where a card's whole-volume maps find lesions and flag false positives, by the slice's brain area (model px).

    python docs/bench/val-layout/by_area.py DATA_DIR SPLIT [--model dae+ae-l1] [--skip N] [--threads 1]

Applies the card as ``detect`` does (its whole-volume eps and tau, post-processing and z window) to the split's
volumes from realisation ``--skip`` on, and tabulates per brain-area bin: slices, false-positive and true-positive
pixels per slice, lesion pixels per slice, and the recall of lesion pixels. A diagnosis: nothing is chosen on it.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.core.detector import foreground_area  # noqa: E402
from app.core.ensemble import load_detector  # noqa: E402
from app.core.protocol import across_volumes  # noqa: E402
from app.data.splits import load_volumes  # noqa: E402
from app.nets.card import card_choices  # noqa: E402
from app.nets.zoo import resolve_model  # noqa: E402

BINS = ((0, 3000), (3000, 5000), (5000, 7000), (7000, None))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("data")
    p.add_argument("split", choices=("val", "test", "test_b"))
    p.add_argument("--model", default="dae+ae-l1")
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    det, _, card = load_detector(resolve_model(a.model), "cpu", batch_size=16)
    ch = card_choices(card)
    vols = load_volumes(a.data, a.split)
    imgs, masks = np.asarray(vols.images[a.skip :]), np.asarray(vols.masks[a.skip :], bool)
    r, z = masks.shape[:2]
    fp, tp = np.zeros((r, z)), np.zeros((r, z))
    area = np.zeros((r, z))
    for v in range(r):
        out = det.run(imgs[v], ch["eps"])
        d = across_volumes(det.post, out.d[None], out.foreground[None], vols)[0]
        pred = det.post.mask(d, ch["tau"])
        fp[v] = (pred & ~masks[v]).reshape(z, -1).sum(1)
        tp[v] = (pred & masks[v]).reshape(z, -1).sum(1)
        area[v] = foreground_area(imgs[v], det.post.foreground_threshold)
    les = masks.reshape(r, z, -1).sum(2)
    print(f"{a.model} at eps {ch['eps']:g}, tau {ch['tau']:g}; {a.data} {a.split}, "
          f"realisations {a.skip + 1}..{a.skip + r}\n")  # fmt: skip
    print("| brain px | slices | FP px / slice | TP px / slice | lesion px / slice | recall of lesion px |")
    print("|---|---|---|---|---|---|")
    for lo, hi in BINS:
        sel = (area >= lo) & (area < (hi or np.inf))
        if not sel.any():
            continue
        rec = tp[sel].sum() / max(1, les[sel].sum())
        name = f"{lo:,}-{hi:,}" if hi else f">= {lo:,}"
        print(f"| {name} | {int(sel.sum())} | {fp[sel].mean():.1f} | {tp[sel].mean():.1f} | {les[sel].mean():.1f} | "
              f"{100 * rec:.0f} % |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
