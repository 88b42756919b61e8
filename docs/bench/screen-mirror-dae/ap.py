"""The base maps of dae-cover and a candidate trained like it (named by its checkpoint stem) on the first 16
validation realisations of the interleaved layout: pooled pixel AP over the eroded foreground after the default's
in-plane post-processing (as screen-restore/restore.py's step 1 scores a map), overall and by lesion kind (each kind's
pixels against the normal tissue; the other kinds' pixels left out). Validation only. Run from the repository root:

    python docs/bench/screen-mirror-dae/ap.py CANDIDATE_STEM [VAL_DATA_DIR]
"""

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from sklearn.metrics import average_precision_score  # noqa: E402

from app.core.ensemble import load_detector  # noqa: E402
from app.data import KIND_NAMES  # noqa: E402
from app.data.splits import load_volumes  # noqa: E402


def main():
    stem = Path(sys.argv[1])
    val_data = sys.argv[2] if len(sys.argv) > 2 else "/work/cache/brain-proxy-v3-val144"
    torch.set_num_threads(2)
    det, _model, _card = load_detector(ROOT / "models" / "dae+dae-cover-base+ae-l1", torch.device("cpu"))
    cand, _m, _c = load_detector(stem, torch.device("cpu"))
    vols = load_volumes(val_data, "val").head(16)
    images, kinds = np.asarray(vols.images), np.asarray(vols.kinds)
    flat = images.reshape(-1, *images.shape[2:])
    kinds = kinds.reshape(-1, *kinds.shape[2:])
    models = {"dae-cover": det.members[1].detector, stem.parent.name: cand}
    names = [n for k, n in enumerate(KIND_NAMES) if k and (kinds == k).any()]
    print(f"16 validation realisations of {val_data} ({len(flat)} slices); lesion pixels by kind: "
          + ", ".join(f"{n} {int((kinds == KIND_NAMES.index(n)).sum())}" for n in names))  # fmt: skip
    print("\n| base map | pooled AP, all kinds | " + " | ".join(names) + " | mean D lesions / normal tissue |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for label, d in models.items():
        run = d.run(flat, 0.0, base_only=True, raw=True)
        inner = det.post.apply(np.ones(run.foreground.shape, np.float32), run.foreground) > 0
        post = det.post.apply(run.d.astype(np.float32), run.foreground)
        les = kinds > 0
        cells = [100 * average_precision_score(les[inner], post[inner])]
        for n in names:
            keep = inner & ((kinds == 0) | (kinds == KIND_NAMES.index(n)))
            cells.append(100 * average_precision_score(kinds[keep] > 0, post[keep]))
        ratio = f"{post[inner & les].mean():.4f} / {post[inner & ~les].mean():.4f}"
        print(f"| {label} | " + " | ".join(f"{c:.1f} %" for c in cells) + f" | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
