"""The default's base residuals of a `bench triage` study set split by sign (D+ where the input is brighter than a
member's pseudo-normal, D- where darker), each combined over the members and post-processed as the card combines
the whole, in-plane (no z window), on the model grid, pickled for sign.py with what is needed to put them on the
study grid (a scratch file of this machine, never loaded by the application).
Run from the repository root: python docs/bench/screen-sign/cache.py STUDIES_DIR OUT.pkl"""

import csv
import dataclasses
import pickle
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from app.bench.triage import LESION_IDS  # noqa: E402
from app.core.ensemble import load_detector  # noqa: E402
from app.core.findings import voxel_volume_mm3  # noqa: E402
from app.data.domain import domain_from_card  # noqa: E402
from app.data.pipeline import prepare_study  # noqa: E402
from app.io import load_study  # noqa: E402

torch.set_num_threads(2)
studies, out = Path(sys.argv[1]), Path(sys.argv[2])
det, model, card = load_detector(
    Path(__file__).resolve().parents[3] / "models" / "dae+dae-cover-base+ae-l1", torch.device("cpu")
)
cfg = model.config
rows = list(csv.DictReader((studies / "truth.csv").open()))
store = {}
for i, r in enumerate(rows):
    t = time.time()
    st = load_study(studies / f"{r['id']}.nii.gz")
    prep = prepare_study(
        st, cfg.image_size, cfg.channels, cfg.normalization, skull_strip=True, domain=domain_from_card(card)
    )
    runs = det.raw_runs(prep.x, 0.0, base_only=True)
    x = np.asarray(prep.x, np.float32)
    parts = {}
    for name, side in (("dp", 1.0), ("dm", -1.0)):
        split = []
        for run in runs:
            diff = (x - run.s).mean(axis=1)  # (N, S, S), the signed residual (one channel)
            split.append(dataclasses.replace(run, d=np.where(side * diff > 0, run.d, 0.0).astype(np.float32)))
        parts[name] = det.combine(split, True)[0]
    whole = det.combine(runs, True)[0]
    ab = bool(int(r["abnormal"]))
    ids = np.asanyarray(nib.load(studies / f"{r['id']}{LESION_IDS}").dataobj).astype(np.int16) if ab else None
    store[r["id"]] = dict(
        d=whole.astype(np.float32),
        dp=parts["dp"].astype(np.float32),
        dm=parts["dm"].astype(np.float32),
        fg=runs[0].foreground,
        geom=prep.geometry,
        brain=prep.brain,
        ids=ids,
        vox_ml=voxel_volume_mm3(st.affine) / 1e3,
    )
    print(i, r["id"], f"{time.time() - t:.1f}s", flush=True)
with open(out, "wb") as f:
    pickle.dump(store, f)
