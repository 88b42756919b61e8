"""Four panels per slice, dae-cover beside a candidate trained like it: the input with its lesion outlined, each
model's pseudo-normal (base, eps = 0) and each model's |x - s| on one colour scale, on the validation slices whose
largest lesion of each kind asked for is largest (first 16 validation realisations; validation only). Run from the
repository root:

    python docs/bench/screen-mirror-dae/panels.py CANDIDATE_STEM OUT.png [KIND ...]   # default: dark cavity bright
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from app.core.ensemble import load_detector  # noqa: E402
from app.data import KIND_NAMES  # noqa: E402
from app.data.splits import load_volumes  # noqa: E402

VAL_DATA = "/work/cache/brain-proxy-v3-val144"


def main():
    stem, out = Path(sys.argv[1]), Path(sys.argv[2])
    want = sys.argv[3:] or ["dark", "cavity", "bright"]
    torch.set_num_threads(2)
    det, _m, _c = load_detector(ROOT / "models" / "dae+dae-cover-base+ae-l1", torch.device("cpu"))
    models = {"dae-cover": det.members[1].detector, stem.parent.name: load_detector(stem, torch.device("cpu"))[0]}
    vols = load_volumes(VAL_DATA, "val").head(16)
    flat = np.asarray(vols.images).reshape(-1, *vols.images.shape[2:])
    kinds = np.asarray(vols.kinds).reshape(-1, *vols.kinds.shape[2:])
    names = np.array(vols.names).ravel()
    rows = [int(np.argmax((kinds == KIND_NAMES.index(k)).sum(axis=(1, 2)))) for k in want]
    x = flat[rows]
    runs = {n: d.run(x, 0.0, base_only=True, raw=True) for n, d in models.items()}
    cols = ["input"] + [f"{n}: s" for n in models] + [f"{n}: |x - s|" for n in models]
    fig, ax = plt.subplots(len(rows), len(cols), figsize=(2.6 * len(cols), 2.7 * len(rows)), squeeze=False)
    for i, (r, k) in enumerate(zip(rows, want, strict=True)):
        panels = [x[i, 0]] + [runs[n].s[i, 0] for n in models] + [runs[n].d[i] for n in models]
        for j, (p, title) in enumerate(zip(panels, cols, strict=True)):
            a = ax[i, j]
            diff = j > len(models)
            a.imshow(p, cmap="inferno" if diff else "gray", vmin=0, vmax=0.3 if diff else 1)
            if j == 0:
                a.contour(kinds[r] > 0, levels=[0.5], colors="lime", linewidths=0.7)
                title = f"{names[r]} ({k})"
            elif diff:
                les, fg = kinds[r] > 0, runs["dae-cover"].foreground[i]
                title += f"\nlesion {p[les].mean():.3f} / rest {p[fg & ~les].mean():.3f}"
            a.set_title(title, fontsize=7)
            a.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}: rows {[str(names[r]) for r in rows]}")


if __name__ == "__main__":
    main()
