"""The shipped screening map with and without N4 bias correction of the skull-stripped input (rule.md, written
first), scored as docs/bench/screen-members/members.py scores a map.

    python docs/bench/screen-n4/n4.py val STUDIES_DIR CHOICES.json    # sets and writes thresholds and cuts
    python docs/bench/screen-n4/n4.py test STUDIES_DIR CHOICES.json   # applies them
"""

import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "bench" / "screen-members"))
from members import score  # noqa: E402  (the scoring screen-members uses)

from app.bench.triage import LESION_IDS  # noqa: E402
from app.core.ensemble import load_detector  # noqa: E402
from app.core.findings import voxel_volume_mm3  # noqa: E402
from app.data.brain import n4_correct  # noqa: E402
from app.data.domain import domain_from_card  # noqa: E402
from app.data.pipeline import prepare_study, restrict_map_to_brain, to_study_grid  # noqa: E402
from app.io import load_study  # noqa: E402

CANDIDATES = ("shipped", "n4")


def n4_stripped(study):
    """The study with N4 applied inside its non-zero part (the background set back to zero), and N4's facts."""
    data = np.asarray(study.data, np.float32)
    inside = data > float(data.min())
    out, facts = n4_correct(data, study.affine, mask=inside)
    out = np.where(inside, np.maximum(out, 0.0), 0.0).astype(np.float32)
    return dataclasses.replace(study, data=out), facts


def screening_map(det, model, card, study) -> tuple[np.ndarray, object, np.ndarray | None]:
    """(the shipped screening map on the study grid inside the brain, its geometry, the brain mask)."""
    cfg = model.config
    prep = prepare_study(study, cfg.image_size, cfg.channels, cfg.normalization, skull_strip=True,
                         domain=domain_from_card(card))  # fmt: skip
    out = det.run(prep.x, 0.0, base_only=True)
    d = det.post.across_slices(out.d, out.foreground, prep.geometry.spacing[2])
    dv = restrict_map_to_brain(to_study_grid(d, prep.geometry, "map"), prep)
    return dv.astype(np.float32), prep.geometry, prep.brain


def main():
    split, studies, choices_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(2)
    det, model, card = load_detector(ROOT / "models" / "dae+dae-cover-base+ae-l1", torch.device("cpu"))
    tau_base = card["chosen_volume"]["tau_base"]
    rows = list(csv.DictReader((studies / "truth.csv").open()))
    data = []
    for i, r in enumerate(rows):
        t = time.time()
        st = load_study(studies / f"{r['id']}.nii.gz")
        maps = {}
        dv, geom, brain = screening_map(det, model, card, st)
        maps["shipped"] = (dv, geom)
        st4, facts = n4_stripped(st)
        dv4, geom4, _ = screening_map(det, model, card, st4)
        maps["n4"] = (dv4, geom4)
        brain = brain if brain is not None else np.ones(st.shape, bool)
        ab = bool(int(r["abnormal"]))
        ids = np.asanyarray(nib.load(studies / f"{r['id']}{LESION_IDS}").dataobj).astype(np.int16) if ab else None
        data.append((maps, brain, ids, voxel_volume_mm3(st.affine) / 1e3))
        print(i, r["id"], f"{time.time() - t:.1f}s", f"N4 field {facts['field_range']}", file=sys.stderr, flush=True)
    normals = [d for d in data if d[2] is None]
    if split == "val":
        nb = np.concatenate([m["shipped"][0][b] for m, b, _, _ in normals])
        p = float((nb > tau_base).mean())
        thr = {c: float(np.quantile(np.concatenate([m[c][0][b] for m, b, _, _ in normals]), 1 - p)) for c in CANDIDATES}
        choices = {"exceedance": p, "threshold": thr, "cut": {}}
    else:
        choices = json.loads(choices_path.read_text())
        thr = choices["threshold"]
    print(f"{split}: {len(data)} studies ({len(normals)} normal); the shipped map's exceedance of tau_base on normal "
          f"brain voxels on validation {choices['exceedance']:.2e}")  # fmt: skip
    print("| screening map | threshold | cut (x threshold) | found <1 / 1-5 / >=5 ml | total | false findings per "
          "normal study at the cut | AUROC |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for c in CANDIDATES:
        given = None if split == "val" else choices["cut"][c]
        cut, cells = score([(m[c][0], m[c][1], ids, vml) for m, _, ids, vml in data], thr[c], given)
        choices["cut"][c] = cut
        print(f"| {c} | {thr[c]:.4f} | {cells} |", flush=True)
    if split == "val":
        choices_path.write_text(json.dumps(choices, indent=1) + "\n")


if __name__ == "__main__":
    main()
