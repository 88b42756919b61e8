"""Where do the studies' scores come from? For each study of a ``bench triage`` run: the finding that carries the
peak D, its axial slices, where they lie in the study's brain (0 = its most inferior brain slice, 1 = its most
superior), and for abnormal studies whether that finding touches a lesion. Reads the run's files only.

    python docs/bench/triage-head/peaks.py RUN_DIR STUDIES_DIR
    e.g. /work/runs/triage-head/dae+dae-cover-base+ae-l1/head-val-mg /work/runs/triage-head/studies-head-val
"""

import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def main(run: Path, studies: Path) -> None:
    truth = {r["id"]: r for r in csv.DictReader((studies / "truth.csv").open())}
    rows = []
    for sid, t in truth.items():
        res = json.loads((run / sid / "result.json").read_text())
        vol = np.asanyarray(nib.load(studies / f"{sid}.nii.gz").dataobj)
        zb = np.flatnonzero(vol.any(axis=(0, 1)))
        top = max(res["findings"], key=lambda f: f["max_d"], default=None)
        if top is None:
            rows.append((sid, int(t["abnormal"]), res["score"], None, None, None))
            continue
        a, b = top["slices"]
        rel = (top["centre_slice"] - zb.min()) / max(1, zb.max() - zb.min())
        hit = None
        if int(t["abnormal"]):
            m = np.asanyarray(nib.load(studies / f"{sid}.mask.nii").dataobj) > 0
            c = np.round(top["centre_voxel"]).astype(int)
            lo, hi = np.maximum(c - 6, 0), c + 7  # the lesion mask within 6 voxels of the finding's centre
            hit = bool(m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].any())
        rows.append((sid, int(t["abnormal"]), res["score"], (a, b), rel, hit))
    print(
        "| study | abnormal | score | slices of the top finding | its place in the brain (0 inf., 1 sup.) | "
        "touches a lesion |"
    )
    print("|---|---|---|---|---|---|")
    for sid, ab, s, sl, rel, hit in sorted(rows, key=lambda r: -r[2]):
        place = "" if rel is None else f"{rel:.2f}"
        print(f"| {sid} | {ab} | {s:.3f} | {sl if sl else '-'} | {place} | {'' if hit is None else hit} |")
    normal = [r[4] for r in rows if not r[1] and r[4] is not None]
    ends = sum(1 for v in normal if v < 0.1 or v > 0.9)
    hits = [r[5] for r in rows if r[1] and r[5] is not None]
    print(
        f"\nnormal studies whose top finding lies in the outer tenth of the brain at either end: {ends} of "
        f"{len(normal)}; place quartiles {np.percentile(normal, [25, 50, 75]).round(2).tolist()}"
    )
    print(f"abnormal studies whose top finding touches a lesion: {sum(hits)} of {len(hits)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
