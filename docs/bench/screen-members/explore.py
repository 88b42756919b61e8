"""Where do the normal studies' highest findings lie, and the lesions' findings? The shipped screening map on the
whole-head validation studies only (exploratory; nothing chosen on it). Per finding (outline 0.7 x threshold, 30 px):
its peak, the distance of its peak voxel from the brain mask's edge (mm), its height in the brain (0 = lowest
brain slice, 1 = highest), its volume. python docs/bench/screen-members/explore.py STUDIES_DIR OUT.npy"""

import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from members import study_maps  # noqa: E402

from app.bench.triage import LESION_IDS  # noqa: E402
from app.core.ensemble import load_detector  # noqa: E402
from app.core.findings import label_findings  # noqa: E402
from app.core.maps import study_detection_mask  # noqa: E402


def main():
    studies = Path(sys.argv[1])
    torch.set_num_threads(2)
    det, model, card = load_detector(ROOT / "models" / "dae+dae-cover-base+ae-l1", torch.device("cpu"))
    thr = 0.1532
    rows = list(csv.DictReader((studies / "truth.csv").open()))
    recs = []
    for r in rows:
        maps, brain, vox_ml = study_maps(det, model, card, studies / f"{r['id']}.nii.gz")
        m, geom = maps["dae+dae-cover+ae-l1"]
        m = m / thr
        ab = bool(int(r["abnormal"]))
        ids = np.asanyarray(nib.load(studies / f"{r['id']}{LESION_IDS}").dataobj) if ab else None
        sp = geom.spacing
        edt = ndimage.distance_transform_edt(brain, sampling=sp)
        zs = np.flatnonzero(brain.any(axis=(0, 1)))
        lab, n = label_findings(study_detection_mask(m, 0.7, geom, 30))
        for k in range(1, n + 1):
            comp = lab == k
            pk = float(m[comp].max())
            idx = np.unravel_index(np.argmax(np.where(comp, m, -1)), m.shape)
            les = bool(ids is not None and (ids[comp] > 0).mean() > 0.1)
            zf = (idx[2] - zs[0]) / max(1, zs[-1] - zs[0])
            recs.append((r["id"], ab, les, pk, float(edt[idx]), zf, comp.sum() * vox_ml, float(m[comp].mean())))
        print(r["id"], n, file=sys.stderr, flush=True)
    a = np.array([(ab, les, pk, d, zf, ml, mean) for _, ab, les, pk, d, zf, ml, mean in recs])
    normal = a[a[:, 0] == 0]
    top = normal[np.argsort(-normal[:, 2])][:48]
    lesion = a[a[:, 1] == 1]

    def desc(x, name):
        q = lambda col, nd: np.percentile(x[:, col], [25, 50, 75]).round(nd)  # noqa: E731
        print(f"{name}: n={len(x)} peak med {np.median(x[:, 2]):.2f}; edge distance mm quartiles {q(3, 1)}; "
              f"z fraction quartiles {q(4, 2)}; volume ml quartiles {q(5, 2)}; "
              f"mean/peak {np.median(x[:, 6] / x[:, 2]):.2f}")  # fmt: skip

    desc(top, "top 48 normal-study findings")
    desc(lesion, "findings on lesions")
    desc(lesion[lesion[:, 2] > np.sort(normal[:, 2])[::-1][24]], "lesion findings above the 1-FP cut")
    np.save(sys.argv[2], a)


if __name__ == "__main__":
    main()
