"""The default's in-plane base maps (no z window) of a `bench triage` study set, on the model grid, with what is
needed to put them on the study grid, pickled for scales.py (a scratch file of this machine, never loaded by the
application). Run from the repository root: python docs/bench/z-scales/cache.py STUDIES_DIR OUT.pkl"""

import csv
import pickle
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from app.bench.triage import LESION_IDS
from app.core.ensemble import load_detector
from app.core.findings import voxel_volume_mm3
from app.data.domain import domain_from_card
from app.data.pipeline import prepare_study
from app.io import load_study

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
    o = det.run(prep.x, 0.0, base_only=True)
    ab = bool(int(r["abnormal"]))
    ids = np.asanyarray(nib.load(studies / f"{r['id']}{LESION_IDS}").dataobj).astype(np.int16) if ab else None
    store[r["id"]] = dict(
        d=o.d.astype(np.float32),
        fg=o.foreground,
        geom=prep.geometry,
        brain=prep.brain,
        ids=ids,
        vox_ml=voxel_volume_mm3(st.affine) / 1e3,
    )
    print(i, r["id"], f"{time.time() - t:.1f}s", flush=True)
with open(out, "wb") as f:
    pickle.dump(store, f)
