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
from app.bench.triage import LESION_IDS  # noqa: E402
from app.core.ensemble import load_detector  # noqa: E402
from app.core.findings import voxel_volume_mm3  # noqa: E402
from app.data.domain import domain_from_card  # noqa: E402
from app.data.pipeline import prepare_study  # noqa: E402
from app.io import load_study  # noqa: E402


def prepared_studies(studies: Path):
    """The default ensemble detector, then for each study of ``studies/truth.csv``: (detector, its row, the study,
    its PreparedStudy, its lesion numbers or None for a normal study, its voxel volume in ml)."""
    torch.set_num_threads(2)
    det, model, card = load_detector(
        Path(__file__).resolve().parents[3] / "models" / "dae+dae-cover-base+ae-l1", torch.device("cpu")
    )
    cfg = model.config
    for r in csv.DictReader((studies / "truth.csv").open()):
        st = load_study(studies / f"{r['id']}.nii.gz")
        prep = prepare_study(
            st, cfg.image_size, cfg.channels, cfg.normalization, skull_strip=True, domain=domain_from_card(card)
        )
        ab = bool(int(r["abnormal"]))
        ids = np.asanyarray(nib.load(studies / f"{r['id']}{LESION_IDS}").dataobj).astype(np.int16) if ab else None
        yield det, r, st, prep, ids, voxel_volume_mm3(st.affine) / 1e3


def write_cache(studies: Path, out: Path, maps) -> None:
    """Pickle, for each study of :func:`prepared_studies`, ``maps(det, prep)`` (a dict of model-grid maps and the
    foreground ``fg``) with the study's geometry, brain mask, lesion numbers and voxel volume."""
    store = {}
    t = time.time()
    for i, (det, r, _st, prep, ids, vox_ml) in enumerate(prepared_studies(studies)):
        store[r["id"]] = dict(**maps(det, prep), geom=prep.geometry, brain=prep.brain, ids=ids, vox_ml=vox_ml)
        print(i, r["id"], f"{time.time() - t:.1f}s", flush=True)
        t = time.time()
    with open(out, "wb") as f:
        pickle.dump(store, f)


def base_map(det, prep) -> dict:
    o = det.run(prep.x, 0.0, base_only=True)
    return {"d": o.d.astype(np.float32), "fg": o.foreground}


if __name__ == "__main__":
    write_cache(Path(sys.argv[1]), Path(sys.argv[2]), base_map)
