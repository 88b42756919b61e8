"""dae-cover restoring under its own training noise at test time (the rule: rule.md beside this file). Run from the
repository root:

    python docs/bench/screen-restore/restore.py ap                          # step 1: pooled AP against the base map
    python docs/bench/screen-restore/restore.py val|test STUDIES_DIR CHOICES.json   # step 2 / 3: the screening

STUDIES_DIR is a `bench triage` study set (for the 96 validation studies, one folder holding both seeds' studies,
see `combine` below). Scored as docs/bench/screen-members/members.py scores a map (its `table`)."""

import csv
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "bench" / "screen-members"))
from members import SHIPPED, run_split, third_member_maps  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

from app.core.ensemble import load_detector, normal_median  # noqa: E402
from app.core.findings import voxel_volume_mm3  # noqa: E402
from app.data.domain import domain_from_card  # noqa: E402
from app.data.pipeline import prepare_study  # noqa: E402
from app.data.splits import load_volumes  # noqa: E402
from app.io import load_study  # noqa: E402
from app.nets.dae import blob_gate, coarse_noise  # noqa: E402

K, STD, NOISE_RES, COVER, COVER_RES, PRIOR = 8, 0.25, 16, 0.2, 8, 0.25  # fixed by the rule
VAL_DATA = "/work/cache/brain-proxy-v3-val144"
BATCH = 32
LABEL = "dae + dae-cover restore + ae-l1"


def restore_maps(detector, x: np.ndarray, seed: int) -> np.ndarray:
    """The raw map of ``x`` (N, C, S, S) against the pseudo-normal restored under K draws of the training
    corruption (the rule's weighted mean, the base pseudo-normal weighted PRIOR)."""
    model = detector.model
    gen = torch.Generator().manual_seed(seed)
    out = np.zeros((len(x), *x.shape[2:]), np.float32)
    with torch.no_grad():
        for a in range(0, len(x), BATCH):
            xb = torch.from_numpy(np.ascontiguousarray(x[a : a + BATCH])).float()
            num = PRIOR * model.decode(model.encode(xb))
            den = torch.full_like(xb, PRIOR)
            for _ in range(K):
                gate = blob_gate(xb, COVER, COVER_RES, gen)
                noise = coarse_noise(xb, STD, NOISE_RES, gen)
                num += gate * model.decode(model.encode(xb + gate * noise))
                den += gate
            out[a : a + BATCH] = detector.raw_maps(xb, num / den)[0]
    return out


def val_slices() -> tuple[np.ndarray, np.ndarray]:
    """The slices (N, C, S, S) and lesion masks (N, S, S) of the first 16 validation realisations of VAL_DATA."""
    vols = load_volumes(VAL_DATA, "val").head(16)
    images, masks = np.asarray(vols.images), np.asarray(vols.masks, bool)
    r, z = masks.shape[:2]
    return images.reshape(r * z, *images.shape[2:]), masks.reshape(r * z, *masks.shape[2:])


def pooled_ap() -> None:
    det, _model, _card = load_detector(ROOT / "models" / "dae+dae-cover-base+ae-l1", torch.device("cpu"))
    cover = det.members[1].detector
    flat, flat_masks = val_slices()
    base = cover.run(flat, 0.0, base_only=True, raw=True)
    fg = base.foreground
    inner = det.post.apply(np.ones(fg.shape, np.float32), fg) > 0
    maps = {"dae-cover base map": base.d, "restore": restore_maps(cover, flat, 0)}
    n_les, n_in = int(flat_masks[inner].sum()), int(inner.sum())
    print(f"16 validation volumes ({len(flat)} slices), {n_les} lesion voxels of {n_in}")
    print("| dae-cover's map | pooled AP, eroded foreground, in-plane post-processing | mean D in lesions / normal "
          "tissue (ratio) |\n|---|---|---|")  # fmt: skip
    for name, d in maps.items():
        post = det.post.apply(d.astype(np.float32), fg)
        ap = 100 * average_precision_score(flat_masks[inner], post[inner])
        les, tis = float(post[inner & flat_masks].mean()), float(post[inner & ~flat_masks].mean())
        print(f"| {name} | {ap:.1f} % | {les:.4f} / {tis:.4f} ({les / tis:.2f}) |", flush=True)


SCALE = None


def per_study(det, model, card, path: Path):
    global SCALE
    cover = det.members[1].detector
    if SCALE is None:
        flat, flat_masks = val_slices()
        fg = cover.run(flat, 0.0, base_only=True, raw=True).foreground
        SCALE = normal_median(restore_maps(cover, flat, 0), fg, flat_masks, det.post.erode_px)
        print(f"restore's scale {SCALE:.6g} (dae-cover's base scale in its card {det.members[1].scale_base:.6g})",
              file=sys.stderr, flush=True)  # fmt: skip
    cfg = model.config
    st = load_study(path)
    prep = prepare_study(st, cfg.image_size, cfg.channels, cfg.normalization, skull_strip=True,
                         domain=domain_from_card(card))  # fmt: skip
    runs = det.raw_runs(prep.x, 0.0, base_only=True)
    seed = sum(path.name.encode())  # one generator per study, fixed by its name
    out = third_member_maps(det, prep, runs, restore_maps(cover, prep.x, seed), SCALE, LABEL)
    brain = prep.brain if prep.brain is not None else np.ones(st.shape, bool)
    return out, brain, voxel_volume_mm3(st.affine) / 1e3, ""


def combine(out: Path, *folders: Path) -> None:
    """One study folder holding several `bench triage` sets (links, ids prefixed by the folder's name)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for f in folders:
        for r in csv.DictReader((f / "truth.csv").open()):
            sid = f"{f.name}-{r['id']}"
            for suffix in (".nii.gz", ".mask.nii", ".lesions.nii"):
                src = f / f"{r['id']}{suffix}"
                if src.exists() and not (out / f"{sid}{suffix}").exists():
                    (out / f"{sid}{suffix}").symlink_to(src.resolve())
            rows.append({**r, "id": sid})
    with (out / "truth.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    torch.set_num_threads(2)
    if sys.argv[1] == "ap":
        pooled_ap()
    elif sys.argv[1] == "combine":
        combine(Path(sys.argv[2]), *map(Path, sys.argv[3:]))
    else:
        run_split(per_study, "screening map", shipped=SHIPPED)
