"""Do the held-out subject's tissue contrasts lie outside the training brains'? Looked at before training with random
per-tissue contrast (the SynthSeg idea of issue 10). Per axial slice with at least 1,500 brain pixels: the three
tissue levels (CSF, grey and white matter) of its brain by 1-D k-means (3 classes, started at the 15th, 50th and
85th percentiles), and the CSF / white-matter and grey / white-matter ratios; per training source (every 7th slice,
the originals and their augmented copies apart) and for the held-out subject's clean validation and test slices.

    python docs/bench/tissue-levels/levels.py /work/cache/brain-proxy-v2z > docs/bench/tissue-levels/levels.md
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from app.data.splits import load_volumes  # noqa: E402

MIN_PX = 1500


def levels(img: np.ndarray) -> np.ndarray | None:
    v = img[img > 0.01].astype(np.float64)
    if v.size < MIN_PX:
        return None
    c = np.quantile(v, [0.15, 0.5, 0.85])
    for _ in range(10):
        lab = np.abs(v[:, None] - c[None]).argmin(1)
        c = np.array([v[lab == k].mean() if (lab == k).any() else c[k] for k in range(3)])
    return np.sort(c)


def row(name: str, lv: list) -> str:
    a = np.array(lv)
    r1, r2 = a[:, 0] / a[:, 2], a[:, 1] / a[:, 2]
    return f"| {name} | {len(a)} | {r1.mean():.3f} +- {r1.std():.3f} | {r2.mean():.3f} +- {r2.std():.3f} |"


def main():
    data = Path(sys.argv[1])
    train = np.load(data / "train" / "images.npy", mmap_mode="r")
    names = json.loads((data / "train" / "names.json").read_text())
    groups = defaultdict(list)
    for i in range(0, len(train), 7):
        lv = levels(np.asarray(train[i, 0]))
        if lv is not None:
            src, copy = names[i].split("-")[:2]
            groups[f"{src} ({'augmented copies' if copy.startswith('aug') else 'original'})"].append(lv)
    print(f"data: {data}; slices with at least {MIN_PX} brain pixels")
    print()
    print("| slices of | n | CSF / white matter | grey / white matter |")
    print("|---|---|---|---|")
    for k in sorted(groups):
        print(row(k, groups[k]))
    for split in ("val", "test"):
        clean = np.asarray(load_volumes(data, split).clean)[:, 0]
        print(row(f"held-out subject, {split} (clean)", [lv for lv in map(levels, clean) if lv is not None]))


if __name__ == "__main__":
    main()
