"""Why the blob filters lose (after the rule's decision, validation only): each map's highest value inside each lesion,
by lesion volume, against the highest value of each normal study's brain, with no outline or size rule. A lesion
"stands out" when its highest value is above the median normal study's highest value. Run from the repository root:

    python docs/bench/screen-blob/peaks.py docs/bench/screen-blob/choices-val.json CACHE.pkl [CACHE.pkl ...]
"""

import json
import pickle
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blob import NAMES, SCALES, candidate_maps  # noqa: E402

BINS = ((0, 1), (1, 5), (5, np.inf))


def main():
    thr = json.loads(Path(sys.argv[1]).read_text())["threshold"]
    normal_max = {n: [] for n in NAMES}
    lesion_max = {n: [] for n in NAMES}
    ml = []
    for c in sys.argv[2:]:
        for s in pickle.load(open(c, "rb")).values():
            m, brain = candidate_maps(s)
            m["blob-max"] = np.max([m[f"blob-{k:g}"] / thr[f"blob-{k:g}"] for k in SCALES], axis=0)
            m = {n: v / thr[n] for n, v in m.items()}
            if s["ids"] is None:
                for n in NAMES:
                    normal_max[n].append(float(m[n][brain].max()))
                continue
            idx = np.arange(1, int(s["ids"].max()) + 1)
            ml += list(ndimage.sum(np.ones_like(s["ids"]), s["ids"], idx) * s["vox_ml"])
            for n in NAMES:
                lesion_max[n] += list(ndimage.maximum(m[n], s["ids"], idx))
    ml = np.array(ml)
    print("| map | median normal study's highest (x threshold) | lesions above it: <1 / 1-5 / >=5 ml | median lesion "
          "highest / median normal highest, <1 ml |")  # fmt: skip
    print("|---|---|---|---|")
    for n in NAMES:
        ref = float(np.median(normal_max[n]))
        lm = np.array(lesion_max[n])
        cells = " / ".join(f"{int((lm[(ml >= a) & (ml < b)] > ref).sum())} of {int(((ml >= a) & (ml < b)).sum())}"
                           for a, b in BINS)  # fmt: skip
        print(f"| {n} | {ref:.2f} | {cells} | {np.median(lm[ml < 1]) / ref:.2f} |")


if __name__ == "__main__":
    main()
