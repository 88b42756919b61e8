"""Figure of the two lesion styles of a ``data brain-proxy`` build, as the models see them (model slices): for each
kind, the test slice (style A) and the test_b slice (style B) with the most pixels of that kind, without and with
the mask's outline. It prints the texture check (high-pass std of the model slices inside each kind's mask, its
edge pixels excluded, beside that of normal tissue). With ``--shape-stats N`` it also draws N single lesions of
each style on the held-out subject and prints their shape statistics (solidity of the main piece, pieces per
lesion, size).

    python scripts/lesion_styles.py DATA_DIR docs/lesion_styles.png [--shape-stats 40]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.data.lesions import KINDS  # noqa: E402
from app.data.splits import load_split  # noqa: E402

CROP = 44


def _example(ss, k):
    """(slice index, centre row, centre col) of the slice with the most pixels of kind k, or None."""
    counts = (ss.kinds == k).reshape(len(ss), -1).sum(axis=1)
    i = int(np.argmax(counts))
    if counts[i] == 0:
        return None
    rr, cc = np.nonzero(ss.kinds[i] == k)
    return i, int(rr.mean()), int(cc.mean())


def figure(data: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = {"A (test)": load_split(data, "test", require_kinds=True), "B (test_b)": load_split(data, "test_b")}
    fig, axes = plt.subplots(4, len(KINDS), figsize=(1.55 * len(KINDS), 1.6 * 4), dpi=90)
    for row, (label, ss) in enumerate(sets.items()):
        for col, kind in enumerate(KINDS):
            top, bot = axes[2 * row, col], axes[2 * row + 1, col]
            ex = _example(ss, col + 1)
            for a in (top, bot):
                a.set_xticks([])
                a.set_yticks([])
            if ex is None:
                top.set_title(f"{kind}: none", fontsize=7)
                continue
            i, r, c = ex
            S = ss.images.shape[-1]
            r0 = int(np.clip(r - CROP // 2, 0, S - CROP))
            c0 = int(np.clip(c - CROP // 2, 0, S - CROP))
            img = ss.images[i, 0, r0 : r0 + CROP, c0 : c0 + CROP]
            kn = ss.kinds[i, r0 : r0 + CROP, c0 : c0 + CROP]
            for a in (top, bot):
                a.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if ((kn > 0) & (kn != col + 1)).any():
                bot.contour((kn > 0) & (kn != col + 1), [0.5], colors="c", linewidths=0.5)
            bot.contour(kn == col + 1, [0.5], colors="r", linewidths=0.6)
            top.set_title(f"{label.split()[0]}: {kind}", fontsize=7)
            bot.set_xlabel(ss.names[i], fontsize=5)
    fig.suptitle(
        "style A (val/test) vs style B (test_b only); lower rows: the kind's outline (red), other kinds (cyan)",
        fontsize=7,
    )
    fig.tight_layout(pad=0.3)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")


def texture(data: str) -> None:
    from scipy import ndimage

    plus = ndimage.generate_binary_structure(2, 1)[None] * np.array([0, 1, 0])[:, None, None]
    print("| split | normal tissue | " + " | ".join(KINDS) + " |")
    print("|---|---|" + "---|" * len(KINDS))
    for split in ("test", "test_b"):
        ss = load_split(data, split, require_kinds=True)
        x = ss.images[:, 0]
        hp = x - ndimage.gaussian_filter(x, (0, 1, 1))
        inner = ndimage.binary_erosion(x > 0.05, structure=plus, iterations=3)
        normal = ~ndimage.binary_dilation(ss.masks, structure=plus, iterations=2) & inner & (x > 0.6)
        cells = []
        for k in range(1, len(KINDS) + 1):
            core = ndimage.binary_erosion(ss.kinds == k, structure=plus)
            cells.append(f"{hp[core].std():.4f} ({int(core.sum())} px)")
        print(f"| {split} | {hp[normal].std():.4f} | " + " | ".join(cells) + " |")


def shape_stats(n: int) -> None:
    from scipy import ndimage

    from app.data.brain_proxy import held_out_subject
    from app.data.lesions import insert_lesions
    from app.data.lesions_b import insert_lesions_b, solidity

    study, brain = held_out_subject(log=lambda *a: None)
    print(
        "| style | lesions | solidity of the main piece, median (IQR) | pieces per lesion, mean (share > 1) |"
        " equivalent diameter mm, median (range) |"
    )
    print("|---|---|---|---|---|")
    for style, insert in (("A", insert_lesions), ("B", insert_lesions_b)):
        sol, pieces, diam = [], [], []
        for seed in range(n):
            _, m, recs = insert(study.data, brain, study.spacing, np.random.default_rng(50_000 + seed), n_lesions=1)
            if not recs or not m.any():
                continue
            lab, k = ndimage.label(m, np.ones((3, 3, 3)))
            sizes = ndimage.sum_labels(m, lab, np.arange(1, k + 1))
            sol.append(solidity(lab == 1 + int(np.argmax(sizes)), study.spacing))
            pieces.append(k)
            diam.append(2 * (3 * m.sum() * np.prod(study.spacing) / (4 * np.pi)) ** (1 / 3))
        q1, med, q3 = np.percentile(sol, [25, 50, 75])
        print(
            f"| {style} | {len(sol)} | {med:.2f} ({q1:.2f}-{q3:.2f}) | {np.mean(pieces):.1f} "
            f"({np.mean(np.array(pieces) > 1):.0%}) | {np.median(diam):.1f} ({min(diam):.1f}-{max(diam):.1f}) |"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--shape-stats", type=int, default=0, metavar="N")
    a = ap.parse_args()
    figure(a.data, a.out)
    texture(a.data)
    if a.shape_stats:
        shape_stats(a.shape_stats)
