"""Which lesions does the detection find, and which could lift a study up the worklist? For every lesion of the
abnormal studies of a whole-head ``bench triage`` run (``--maps``): its kind (the study drawn again from its seed,
``app.bench.triage._draw_study``) and volume (its number in the study's lesion numbers), whether the detection
found it (more than a tenth of its voxels flagged by findings that lie at least a tenth in lesions, as ``bench
triage`` counts), its highest D, and the share of the
normal studies whose score (peak D) lies below that D -- 1 means the lesion alone would put its study above every
normal study. Reads the run's files only; chooses nothing.

    python docs/bench/triage-head/lesions.py RUN_DIR STUDIES_DIR SPLIT SEED
    e.g. /work/runs/triage-head/dae+dae-cover-base+ae-l1/head-val-mg /work/runs/triage-head/studies-head-val head-val 11
"""

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from app.bench.triage import (  # noqa: E402
    LESION_IDS,
    LESION_ML_EDGES,
    _draw_study,
    lesion_bin_labels,
    lesion_findings,
    split_blocks_of,
)
from app.core.findings import label_findings  # noqa: E402
from app.core.metrics import FOUND_FRACTION  # noqa: E402
from app.data.brain_proxy import held_out_subject  # noqa: E402


def main(run: Path, studies: Path, split: str, seed: int) -> None:
    rows = list(csv.DictReader((studies / "truth.csv").open()))
    normal = np.array(
        [json.loads((run / r["id"] / "result.json").read_text())["score"] for r in rows if not int(r["abnormal"])]
    )
    study, brain = held_out_subject(lambda *a: None)
    blocks = split_blocks_of(study, split)
    bins = lesion_bin_labels()
    table = []
    for i, r in enumerate(rows):
        if not int(r["abnormal"]):
            continue
        *_, records = _draw_study(study, brain, blocks, i, int(r["lesions"]), seed)
        img = nib.load(studies / f"{r['id']}{LESION_IDS}")
        ids = np.asanyarray(img.dataobj).astype(int)
        vox_ml = float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0
        d = np.asanyarray(nib.load(run / r["id"] / "difference.nii.gz").dataobj).astype(np.float32)
        fl, n = label_findings(np.asanyarray(nib.load(run / r["id"] / "mask.nii.gz").dataobj) > 0)
        det = lesion_findings(fl, n, ids)[fl]  # flagged by findings that may find a lesion, as bench triage counts
        for k, rec in enumerate(records, start=1):
            m = ids == k
            if not m.any():  # painted over by a later lesion
                continue
            ml = float(m.sum() * vox_ml)
            peak = float(d[m].max())
            found = bool(det[m].mean() > FOUND_FRACTION)
            size = bins[int(np.searchsorted(LESION_ML_EDGES, ml, side="right"))]
            table.append((r["id"], int(r["lesions"]), rec.kind, ml, size, found, peak, float((normal < peak).mean())))
    print(f"run {run}: {len(normal)} normal studies, score median {np.median(normal):.3f}, max {normal.max():.3f}\n")
    print("| study | lesions | kind | ml | found | lesion's highest D | normal studies below it |")
    print("|---|---|---|---|---|---|---|")
    for sid, n, kind, ml, _size, found, peak, below in sorted(table, key=lambda t: (t[1], t[0], -t[3])):
        print(f"| {sid} | {n} | {kind} | {ml:.2f} | {'yes' if found else 'no'} | {peak:.3f} | {below:.2f} |")
    print("\n| lesions | count | found | highest D above the median normal study's score | above every one |")
    print("|---|---|---|---|---|")
    groups = defaultdict(list)
    for t in table:
        groups[t[2]].append(t)
        groups[t[4]].append(t)
    for name in [*sorted(k for k in groups if k not in bins), *[b for b in bins if b in groups]]:
        ts = groups[name]
        print(f"| {name} | {len(ts)} | {sum(t[5] for t in ts)} | {sum(t[7] > 0.5 for t in ts)} | "
              f"{sum(t[7] == 1.0 for t in ts)} |")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
