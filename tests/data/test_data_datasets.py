"""Dataset readers on tiny fixtures built in each published layout."""

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from app.cli import main
from app.data.datasets import (
    bmad_cases,
    brats2021_cases,
    btcv_cases,
    cases_to_slices,
    idrid_cases,
    load_case,
    split_cases,
)
from app.data.phantom import brain_phantom
from app.data.splits import load_split
from app.errors import StudyError

LAS = np.diag([-1.0, 1.0, 1.0, 1.0])  # BraTS-like orientation (not RAS), to exercise the reorientation


def _brats(root, n=5):
    for i in range(n):
        cid = f"BraTS2021_{i:05d}"
        d = root / "BraTS2021_Training_Data" / cid
        d.mkdir(parents=True)
        vol, brain = brain_phantom((24, 28, 20), seed=i)
        seg = np.zeros(vol.shape, np.uint8)
        seg[8:12, 10:15, 8:12] = 2  # tumour in slices 8..11
        seg[9:11, 11:13, 9:11] = 4
        for seq in ("flair", "t1", "t1ce", "t2"):
            v = vol + 40 * (seg > 0) if seq == "flair" else vol
            nib.save(nib.Nifti1Image(v.astype(np.int16), LAS), d / f"{cid}_{seq}.nii.gz")
        nib.save(nib.Nifti1Image(seg, LAS), d / f"{cid}_seg.nii.gz")


def test_brats_cases_masks_and_split(tmp_path):
    _brats(tmp_path)
    cases = brats2021_cases(tmp_path)
    assert [c.id for c in cases] == [f"BraTS2021_{i:05d}" for i in range(5)]
    assert cases[0].image.name.endswith("_flair.nii.gz")
    study, mask = load_case(cases[0])
    assert mask.sum() == 4 * 5 * 4
    # the mask sits exactly where flair differs from t1 (+40 inside the tumour), in the canonical grid
    from app.io import load_study

    t1 = load_study(cases[0].image.with_name("BraTS2021_00000_t1.nii.gz"))
    np.testing.assert_array_equal((study.data - t1.data) == 40, mask)
    parts = split_cases(cases, seed=0)
    ids = [c.id for p in parts.values() for c in p]
    assert sorted(ids) == sorted(c.id for c in cases) and len(set(ids)) == 5
    normal = cases_to_slices(cases[:2], 32, keep="normal")
    assert not normal.masks.any()
    allsl = cases_to_slices(cases[:1], 32)
    zs = {int(n.rsplit("z", 1)[1]) for n, m in zip(allsl.names, allsl.masks, strict=True) if m.any()}
    assert zs == {8, 9, 10, 11}
    with pytest.raises(StudyError):
        brats2021_cases(tmp_path / "BraTS2021_Training_Data" / "BraTS2021_00000", sequence="dwi")


def test_brats_cli_conversion(tmp_path, capsys):
    _brats(tmp_path / "in", n=6)
    code = main(["data", "brats2021", "--root", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--size", "32"])
    assert code == 0, capsys.readouterr().err
    tr, te = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    assert tr.masks is None and tr.images.shape[1:] == (1, 32, 32)
    assert len(te.abnormal) > 0
    train_cases = {n.split("-z")[0] for n in tr.names}
    test_cases = {n.split("-z")[0] for n in te.names}
    assert not train_cases & test_cases  # patient-level split


def test_btcv(tmp_path):
    for i in (1, 2):
        for sub in ("img", "label"):
            (tmp_path / "RawData" / "Training" / sub).mkdir(parents=True, exist_ok=True)
        vol, body = brain_phantom((20, 20, 6), seed=i)
        hu = np.where(body, vol - 50, -1000).astype(np.int16)
        nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / "RawData" / "Training" / "img" / f"img000{i}.nii.gz")
        nib.save(
            nib.Nifti1Image((body * 6).astype(np.uint8), np.eye(4)),
            tmp_path / "RawData" / "Training" / "label" / f"label000{i}.nii.gz",
        )
    cases = btcv_cases(tmp_path)
    assert [c.id for c in cases] == ["btcv0001", "btcv0002"] and cases[0].modality == "CT"
    study, mask = load_case(cases[0])
    assert study.modality == "CT" and not mask.any()  # organs are normal anatomy
    ss = cases_to_slices(cases, 16, normalization="ct-window:soft-tissue")
    assert ss.images.shape[1:] == (1, 16, 16) and 0 <= ss.images.min() and ss.images.max() <= 1


def _bmad(root, rgb=False):
    rng = np.random.default_rng(0)

    def pic(path, lesion=False):
        path.parent.mkdir(parents=True, exist_ok=True)
        a = rng.integers(60, 120, (24, 24), dtype=np.uint8)
        if lesion:
            a[5:9, 5:9] = 250
        Image.fromarray(np.stack([a] * 3, -1) if rgb else a).save(path)
        if lesion:
            m = np.zeros((24, 24), np.uint8)
            m[5:9, 5:9] = 255
            lab = path.parent.parent / "label" / path.name
            lab.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m).save(lab)

    for i in range(4):
        pic(root / "train" / "good" / "img" / f"{i:05d}_60.png")
    for split in ("valid", "test"):
        pic(root / split / "good" / "img" / "00100_60.png")
        pic(root / split / "Ungood" / "img" / "00124_60.png", lesion=True)


def test_bmad_layout(tmp_path, capsys):
    _bmad(tmp_path / "Brain")
    assert len(bmad_cases(tmp_path / "Brain", "train")) == 4
    val = bmad_cases(tmp_path / "Brain", "val")
    assert [c.id for c in val] == ["good/00100_60", "ungood/00124_60"]
    study, mask = load_case(val[1])
    assert mask.sum() == 16 and study.data[mask].min() == 250
    code = main(["data", "bmad", "--root", str(tmp_path / "Brain"), "--out", str(tmp_path / "out"), "--size", "24"])
    assert code == 0, capsys.readouterr().err
    te = load_split(tmp_path / "out", "test")
    assert len(te) == 2 and list(te.abnormal) == [1]
    # the lesion mask lands on the bright square after the shared pipeline
    assert te.images[1, 0][te.masks[1]].mean() > te.images[1, 0][~te.masks[1]].mean() + 0.3
    with pytest.raises(StudyError):
        bmad_cases(tmp_path, "train")


def test_idrid_union_of_lesions_without_optic_disc(tmp_path):
    img_dir = tmp_path / "A. Segmentation" / "1. Original Images" / "a. Training Set"
    gt = tmp_path / "A. Segmentation" / "2. All Segmentation Groundtruths" / "a. Training Set"
    img_dir.mkdir(parents=True)
    rgb = np.full((20, 30, 3), 90, np.uint8)
    rgb[..., 0] = 150
    Image.fromarray(rgb).save(img_dir / "IDRiD_01.jpg")
    for folder, code, box in (
        ("1. Microaneurysms", "MA", (1, 3)),
        ("3. Hard Exudates", "EX", (5, 8)),
        ("5. Optic Disc", "OD", (10, 18)),
    ):
        (gt / folder).mkdir(parents=True)
        m = np.zeros((20, 30), np.uint8)
        m[box[0] : box[1], box[0] : box[1]] = 255
        Image.fromarray(m).save(gt / folder / f"IDRiD_01_{code}.tif")
    cases = idrid_cases(tmp_path, "train")
    assert len(cases) == 1 and {p.name for p in cases[0].masks} == {"IDRiD_01_MA.tif", "IDRiD_01_EX.tif"}
    study, mask = load_case(cases[0])
    assert study.channels == 3 and mask.sum() == 4 + 9
