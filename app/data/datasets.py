"""Readers for the paper's public datasets in their published folder layouts, and conversion to the project's
slice layout (``DIR/{train,val,test}/images.npy`` ... as :mod:`app.data.splits`), through the same
load -> normalise -> slice path as ``detect`` (:func:`app.data.pipeline.prepare_study`).

Layouts (what the download archives unpack to):

- BraTS2021: ``ROOT/BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz`` (any depth). The mask is
  ``seg > 0`` (whole tumour).
- BTCV (Synapse multi-organ CT): ``ROOT/.../img/imgXXXX.nii.gz`` with ``ROOT/.../label/labelXXXX.nii.gz``
  (labels 1-13 are organs: normal anatomy, so BTCV volumes are *normal* training data for a CT model).
- BMAD (Brain, Liver, RESC): ``ROOT/{train,valid,test}/good/img/*.png`` and
  ``ROOT/{valid,test}/Ungood/{img,label}/*.png`` (train may also be ``train/good/*.png``).
- IDRiD segmentation: ``ROOT/1. Original Images/{a. Training Set,b. Testing Set}/IDRiD_NN.jpg`` with masks
  ``ROOT/2. All Segmentation Groundtruths/<set>/<k. Lesion>/IDRiD_NN_{MA,HE,EX,SE}.tif``; the anomaly mask is
  the union of the four lesion kinds (the optic disc ``OD`` is normal anatomy and left out).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.data.pipeline import prepare_study, study_mask_to_model
from app.data.splits import SliceSet
from app.errors import StudyError
from app.foreground import FOREGROUND_THRESHOLD
from app.io import load_study
from app.io.study import Study


@dataclass
class Case:
    id: str
    image: Path
    masks: list[Path] = field(default_factory=list)  # union of these is the anomaly mask; empty = normal
    modality: str | None = None
    annotated: bool = True  # False: no ground truth known (e.g. unlabelled training images)


def _need_dir(root) -> Path:
    p = Path(root)
    if not p.is_dir():
        raise StudyError(f"{p}: no such folder")
    return p


# ---- BraTS2021 ---------------------------------------------------------------------------------------------------
BRATS_SEQUENCES = ("flair", "t1", "t1ce", "t2")


def brats2021_cases(root, sequence: str = "flair") -> list[Case]:
    if sequence not in BRATS_SEQUENCES:
        raise StudyError(f"BraTS sequence must be one of {', '.join(BRATS_SEQUENCES)}")
    root = _need_dir(root)
    cases = []
    for seg in sorted(root.rglob("*_seg.nii*")):
        cid = seg.name.split("_seg.nii")[0]
        img = next(iter(sorted(seg.parent.glob(f"{cid}_{sequence}.nii*"))), None)
        if img is not None:
            cases.append(Case(cid, img, [seg], "MR"))
    if not cases:
        raise StudyError(f"{root}: no BraTS cases (CASE/CASE_{sequence}.nii.gz with CASE_seg.nii.gz)")
    return cases


# ---- BTCV --------------------------------------------------------------------------------------------------------
def btcv_cases(root) -> list[Case]:
    root = _need_dir(root)
    cases = []
    for img in sorted(root.rglob("img*.nii*")):
        if img.parent.name != "img":
            continue
        num = re.sub(r"^img", "", img.name.split(".nii")[0])
        # organ labels (label/labelXXXX) are normal anatomy: every BTCV slice is a normal CT slice
        cases.append(Case(f"btcv{num}", img, [], "CT"))
    if not cases:
        raise StudyError(f"{root}: no BTCV volumes (img/imgXXXX.nii.gz)")
    return cases


# ---- BMAD --------------------------------------------------------------------------------------------------------
BMAD_SPLITS = {"train": "train", "val": "valid", "test": "test"}
PICTURE_GLOB = ("*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.bmp")


def _pictures(d: Path) -> list[Path]:
    if not d.is_dir():
        return []
    return sorted(p for g in PICTURE_GLOB for p in d.glob(g))


def bmad_cases(root, split: str) -> list[Case]:
    """Cases of one BMAD split ("train", "val" or "test"); good images have an empty mask."""
    root = _need_dir(root)
    d = root / BMAD_SPLITS.get(split, split)
    if not d.is_dir():
        raise StudyError(f"{root}: no '{BMAD_SPLITS.get(split, split)}' folder (BMAD layout)")
    cases = []
    good = _pictures(d / "good" / "img") or _pictures(d / "good")
    cases += [Case(f"good/{p.stem}", p, [], None) for p in good]
    for p in _pictures(d / "Ungood" / "img"):
        lab = next(iter(sorted((d / "Ungood" / "label").glob(p.stem + ".*"))), None)
        if lab is None:
            raise StudyError(f"{p}: no label image in {d / 'Ungood' / 'label'}")
        cases.append(Case(f"ungood/{p.stem}", p, [lab], None))
    if not cases:
        raise StudyError(f"{d}: no images (good/img/*.png, Ungood/img/*.png)")
    return cases


# ---- IDRiD -------------------------------------------------------------------------------------------------------
IDRID_LESIONS = ("MA", "HE", "EX", "SE")


def idrid_cases(root, split: str = "train") -> list[Case]:
    root = _need_dir(root)
    tag = "a." if split == "train" else "b."
    img_dirs = [p for p in root.rglob("*") if p.is_dir() and p.name.startswith(tag) and "Original" in str(p.parent)]
    gt_dirs = [p for p in root.rglob("*") if p.is_dir() and p.name.startswith(tag) and "Groundtruth" in str(p.parent)]
    if not img_dirs:
        raise StudyError(f"{root}: no IDRiD '1. Original Images/{tag} ...' folder")
    masks_by_id: dict[str, list[Path]] = {}
    for g in gt_dirs:
        for m in g.rglob("*.tif"):
            mm = re.match(r"(IDRiD_\d+)_([A-Z]+)\.tif$", m.name)
            if mm and mm.group(2) in IDRID_LESIONS:
                masks_by_id.setdefault(mm.group(1), []).append(m)
    cases = [Case(p.stem, p, sorted(masks_by_id.get(p.stem, [])), "OT") for p in _pictures(img_dirs[0])]
    if not cases:
        raise StudyError(f"{img_dirs[0]}: no images")
    return cases


# ---- loading and slicing -----------------------------------------------------------------------------------------
def load_case(case: Case) -> tuple[Study, np.ndarray | None]:
    """The study and its anomaly mask (bool, canonical grid), or None where the case has no ground truth."""
    from app.io import load_mask

    study = load_study(case.image, modality=case.modality)
    if not case.annotated:
        return study, None
    mask = np.zeros(study.shape, dtype=bool)
    for m in case.masks:
        mask |= load_mask(m, study)
    return study, mask


def cases_to_slices(
    cases: Iterable[Case],
    size: int,
    channels: int = 1,
    normalization: str | None = None,
    keep: str = "all",
    min_area: float = 0.1,
    log: Callable[[str], None] = lambda s: None,
) -> SliceSet:
    """Axial slices of every case through the detect path. ``keep``: "all", "normal" (slices without anomaly:
    training data) or "abnormal". Slices whose foreground is below ``min_area`` of the case's largest are
    dropped (they hold no anatomy)."""
    images, masks, names = [], [], []
    have_masks = True
    for case in cases:
        study, mask = load_case(case)
        prep = prepare_study(study, size, channels, normalization)
        area = (prep.x.mean(axis=1) > FOREGROUND_THRESHOLD).reshape(len(prep.x), -1).sum(axis=1)
        ok = area >= min_area * max(1, area.max())
        m = study_mask_to_model(mask, prep.geometry) if mask is not None else None
        have_masks &= m is not None
        for k in np.flatnonzero(ok):
            abn = bool(m[k].any()) if m is not None else False
            if (keep == "normal" and abn) or (keep == "abnormal" and not abn):
                continue
            images.append(prep.x[k])
            masks.append(m[k] if m is not None else np.zeros(prep.x.shape[2:], bool))
            names.append(f"{case.id}-z{prep.geometry.slices[k]}")
        log(f"{case.id}: {int(ok.sum())} slices")
    if not images:
        raise StudyError("no slices selected from these cases")
    return SliceSet(np.stack(images), np.stack(masks) if have_masks else None, names)


def split_cases(cases: list[Case], fractions=(0.7, 0.1, 0.2), seed: int = 0) -> dict[str, list[Case]]:
    """Patient-level split (never slices of one case in two splits), seeded."""
    idx = np.random.default_rng(seed).permutation(len(cases))
    n_tr = int(round(fractions[0] * len(cases)))
    n_va = int(round(fractions[1] * len(cases)))
    pick = lambda ii: [cases[i] for i in sorted(ii)]  # noqa: E731
    return {"train": pick(idx[:n_tr]), "val": pick(idx[n_tr : n_tr + n_va]), "test": pick(idx[n_tr + n_va :])}


def write_dataset(out, splits: dict[str, SliceSet], meta: dict) -> dict:
    """Save the splits in the project's layout with a meta.json (counts added)."""
    import json

    from app.atomic import atomic_write_text
    from app.data.splits import save_split

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, ss in splits.items():
        save_split(out, name, ss.images, ss.masks if name != "train" else None, ss.names)
        counts[name] = len(ss)
        if ss.masks is not None and name != "train":
            counts[f"{name}_abnormal"] = int(len(ss.abnormal))
    meta = {**meta, "counts": counts}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=1) + "\n")
    return meta


def convert(
    fmt: str,
    root,
    out,
    size: int = 128,
    normalization: str | None = None,
    seed: int = 0,
    sequence: str = "flair",
    log: Callable[[str], None] = print,
) -> dict:
    """Read a dataset in its published layout and write it as train/val/test slices."""
    channels = 1
    if fmt == "brats2021":
        parts = split_cases(brats2021_cases(root, sequence), seed=seed)
        splits = {
            "train": cases_to_slices(parts["train"], size, 1, normalization, keep="normal", log=log),
            "val": cases_to_slices(parts["val"], size, 1, normalization, log=log),
            "test": cases_to_slices(parts["test"], size, 1, normalization, log=log),
        }
    elif fmt == "btcv":
        splits = {
            "train": cases_to_slices(btcv_cases(root), size, 1, normalization or "ct-window:soft-tissue", log=log)
        }
    elif fmt == "bmad":
        first = bmad_cases(root, "train")[0]
        channels = load_study(first.image).channels
        splits = {
            s: cases_to_slices(bmad_cases(root, s), size, channels, normalization, min_area=0.0, log=log)
            for s in ("train", "val", "test")
        }
    elif fmt == "idrid":
        channels = 3
        splits = {
            "val": cases_to_slices(idrid_cases(root, "train"), size, 3, normalization, min_area=0.0, log=log),
            "test": cases_to_slices(idrid_cases(root, "test"), size, 3, normalization, min_area=0.0, log=log),
        }
    else:
        raise StudyError(f"unknown dataset format {fmt!r}")
    meta = {
        "name": fmt,
        "root": str(root),
        "image_size": size,
        "channels": channels,
        "normalization": normalization or "by modality",
        "seed": seed,
    }
    return write_dataset(out, splits, meta)
