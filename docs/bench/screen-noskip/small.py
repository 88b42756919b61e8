"""Where the screening's small lesions are lost (chose nothing): for every lesion of the whole-head validation
studies, by volume, whether any finding of the shipped screening outline (0.7 x tau_base, 30 px) touches it, how
many have more than a tenth of their voxels flagged, whether a touching finding peaks inside the lesion, and the
lesion's highest screening D over tau_base. Run from the repository root:

    python docs/bench/screen-noskip/small.py CACHE.pkl > docs/bench/screen-noskip/small.md

CACHE from docs/bench/z-scales/cache.py over the whole-head validation studies (seed 11)."""

import pickle
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "screen-members"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "screen-sign"))
from members import outlined  # noqa: E402
from sign import TAU_BASE, study_grid  # noqa: E402


def main():
    data = pickle.load(open(sys.argv[1], "rb"))
    rows = []
    for s in data.values():
        if s["ids"] is None:
            continue
        dv, _ = study_grid(s, s["d"])
        ((ids, lab, n, _, vml, _),) = outlined([(dv, s["geom"], s["ids"], s["vox_ml"])], TAU_BASE)
        pos = ndimage.maximum_position(dv, lab, index=np.arange(1, n + 1)) if n else []
        for k in np.unique(ids[ids > 0]):
            m = ids == k
            labs = [int(v) for v in np.unique(lab[m]) if v > 0]
            rows.append((m.sum() * vml, (lab[m] > 0).mean(), len(labs), any(m[pos[v - 1]] for v in labs),
                         float(dv[m].max()) / TAU_BASE))  # fmt: skip
    r = np.array(rows, dtype=float)
    print("| lesions | n | touched by an outlined finding | more than a tenth flagged | a touching finding peaks "
          "inside | highest D / tau_base, median (quartiles) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for lo, hi, name in ((0, 1, "under 1 ml"), (1, 5, "1-5 ml"), (5, np.inf, "5 ml or more")):
        x = r[(r[:, 0] >= lo) & (r[:, 0] < hi)]
        q = np.quantile(x[:, 4], [0.5, 0.25, 0.75])
        print(f"| {name} | {len(x)} | {int((x[:, 2] > 0).sum())} | {int((x[:, 1] > 0.1).sum())} | "
              f"{int(x[:, 3].sum())} | {q[0]:.2f} ({q[1]:.2f}-{q[2]:.2f}) |")  # fmt: skip


if __name__ == "__main__":
    main()
