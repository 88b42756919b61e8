"""How much of a lesion survives the screening's own pipeline, whatever the model (whole-head validation studies
only; nothing chosen on it). For each abnormal study of a `bench triage` whole-head set, the study is drawn again
from its seed without its lesions (the same augmentation), both versions go through `prepare_study`, and the
lesion's own signal |x - x_clean| on the model grid is put through what the default's screening does to a map: the
ensemble's scaling (a perfect pseudo-normal in every member), the card's in-plane post-processing, its 18 mm z
window, the study grid and the brain. Each lesion's highest value of that map, divided by the screening's report
cut in D units (its cut times the shipped map's threshold, both from docs/bench/screen-blob/choices-val.json), says
whether the lesion could pass the cut if the models' pseudo-normal were perfect inside it. The shipped map's own
highest value in the lesion is beside it. Run from the repository root:

    python docs/bench/small-ceiling/ceiling.py STUDIES_DIR SEED [STUDIES_DIR SEED ...] > ceiling.md
"""

import csv
import json
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from app.bench.triage import LESION_IDS, split_blocks_of  # noqa: E402
from app.core.ensemble import load_detector  # noqa: E402
from app.core.findings import voxel_volume_mm3  # noqa: E402
from app.data.augment import augment_volume  # noqa: E402
from app.data.brain_proxy import held_out_subject  # noqa: E402
from app.data.domain import domain_from_card  # noqa: E402
from app.data.lesions import insert_lesions  # noqa: E402
from app.data.pipeline import prepare_study, restrict_map_to_brain, to_study_grid  # noqa: E402
from app.io import load_study  # noqa: E402

BINS = ((0, 0.1), (0.1, 0.5), (0.5, 1), (1, 5), (5, np.inf))


def redrawn(folder: Path, seed: int):
    """Each abnormal study of the `bench triage` whole-head set ``folder`` (built with ``seed``), drawn again from its
    seed: (its truth row, the clean block, the block with its lesions, the lesion records in lesion-number order, the
    saved image). Checked against the saved study."""
    study, brain = held_out_subject(lambda *_: None)
    blocks = split_blocks_of(study, "head-val")
    for i, r in enumerate(csv.DictReader((folder / "truth.csv").open())):
        load = int(r["lesions"])
        if not load:
            continue
        rng = np.random.default_rng(seed * 100_000 + i)
        z0, z1 = blocks[i % len(blocks)]
        block = (slice(None), slice(None), slice(z0, z1 + 1))
        clean, b, sp, _ = augment_volume(study.data[block], brain[block], study.spacing, rng)
        les, _mask, records = insert_lesions(clean, b, sp, rng, n_lesions=load)
        saved = nib.load(folder / f"{r['id']}.nii.gz")
        if not np.allclose(np.asanyarray(saved.dataobj), les, atol=1e-4):
            raise RuntimeError(f"{r['id']}: drawn again, it differs from the saved study")
        yield r, clean, les, records, saved


def main():
    choices = json.loads((ROOT / "docs/bench/screen-blob/choices-val.json").read_text())
    tau_base = choices["threshold"]["shipped"]
    cut_d = choices["cut"]["shipped"] * tau_base  # the screening's report cut in D units
    torch.set_num_threads(2)
    det, model, card = load_detector(ROOT / "models" / "dae+dae-cover-base+ae-l1", torch.device("cpu"))
    cfg = model.config
    factor = det.unit(True) * np.mean([1.0 / m.scale_base for m in det.members])
    rows_out, kinds = [], []
    args = sys.argv[1:]
    for folder, seed in zip(args[::2], map(int, args[1::2]), strict=True):
        folder = Path(folder)
        for r, clean, _les, records, saved in redrawn(folder, seed):
            with tempfile.TemporaryDirectory() as tmp:
                p = Path(tmp) / "clean.nii.gz"
                nib.save(nib.Nifti1Image(clean.astype(np.float32), saved.affine), p)
                prep_c = prepare_study(load_study(p), cfg.image_size, cfg.channels, cfg.normalization,
                                       skull_strip=True, domain=domain_from_card(card))  # fmt: skip
            st = load_study(folder / f"{r['id']}.nii.gz")
            prep = prepare_study(st, cfg.image_size, cfg.channels, cfg.normalization, skull_strip=True,
                                 domain=domain_from_card(card))  # fmt: skip
            if prep.x.shape != prep_c.x.shape:
                raise RuntimeError(f"{r['id']}: the two versions prepare to different grids")
            sig = (np.abs(prep.x - prep_c.x).mean(axis=1) * factor).astype(np.float32)
            runs = det.raw_runs(prep.x, 0.0, base_only=True)
            fgs = runs[0].foreground
            d_in = det.post.apply(sig, fgs)
            maps = {}
            d_win = det.post.across_slices(d_in, fgs, prep.geometry.spacing[2])
            for name, d in (("window", d_win), ("in-plane", d_in)):
                maps[name] = restrict_map_to_brain(to_study_grid(d, prep.geometry, "map"), prep)
            shipped, _ = det.combine(runs, True)
            shipped = det.post.across_slices(shipped, fgs, prep.geometry.spacing[2])
            maps["shipped"] = restrict_map_to_brain(to_study_grid(shipped, prep.geometry, "map"), prep)
            ids = np.asanyarray(nib.load(folder / f"{r['id']}{LESION_IDS}").dataobj).astype(np.int16)
            idx = np.arange(1, int(ids.max()) + 1)
            vox_ml = voxel_volume_mm3(st.affine) / 1e3
            ml = ndimage.sum(np.ones_like(ids), ids, idx) * vox_ml
            peaks = {n: ndimage.maximum(m, ids, idx) for n, m in maps.items()}
            for k in range(len(idx)):
                rel = (float(peaks[n][k]) / cut_d for n in ("window", "in-plane", "shipped"))
                rows_out.append((float(ml[k]), *rel))
                kinds.append(records[k].kind)
            print(r["id"], file=sys.stderr, flush=True)
    a = np.array(rows_out)
    print(f"{len(a)} lesions; the screening's cut {cut_d:.4f} (D units); each figure: a lesion's highest value / cut")
    print()
    print("| lesion volume (ml) | lesions | perfect pseudo-normal, with the 18 mm window: median / above the cut | "
          "without the window: median / above | the shipped map: median / above |")  # fmt: skip
    print("|---|---|---|---|---|")
    for lo, hi in BINS:
        s = a[(a[:, 0] >= lo) & (a[:, 0] < hi)]
        cells = " | ".join(f"{np.median(s[:, c]):.2f} / {int((s[:, c] > 1).sum())}" for c in (1, 2, 3))
        print(f"| {lo:g}-{hi:g} | {len(s)} | {cells} |")
    print()
    print("Lesions of 1 ml or more, by kind: how much of what a perfect pseudo-normal would give the lesion (with the "
          "window) the shipped map gives it (its highest value / the perfect map's highest)")  # fmt: skip
    print()
    print("| kind | lesions | shipped / perfect: median [quartiles] | above the cut: perfect / shipped |")
    print("|---|---|---|---|")
    kinds = np.array(kinds)
    for kind in sorted(set(kinds)):
        s = a[(a[:, 0] >= 1) & (kinds == kind)]
        if len(s):
            q = np.percentile(s[:, 3] / np.maximum(s[:, 1], 1e-9), [25, 50, 75])
            print(f"| {kind} | {len(s)} | {q[1]:.2f} [{q[0]:.2f}, {q[2]:.2f}] | {int((s[:, 1] > 1).sum())} / "
                  f"{int((s[:, 3] > 1).sum())} |")  # fmt: skip


if __name__ == "__main__":
    main()
