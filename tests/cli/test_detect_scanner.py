"""``detect`` on a skull-on study straight from the scanner: the brain found (atlas), the mask kept inside it and
written beside the result, NRRD in and out on the same grid, and a domain warning for a CT given to an MR model."""

import json

import nrrd
import numpy as np
import pytest
import torch

from app.cli import main
from app.data import sources


@pytest.fixture(scope="module")
def tiny_mr_model(tmp_path_factory):
    from app.nets import ModelConfig, create_model
    from app.nets.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=16, latent_dim=4, width=4)).freeze()
    card = {"chosen": {"eps": 0.05, "tau": 0.0, "tau_base": 0.0}, "domain": {"modality": "MR", "contrast": "T1"}}
    save_checkpoint(m, d / "tiny", card)
    return d / "tiny"


def test_skull_on_nrrd_study_detect_keeps_to_the_brain(tmp_path, tiny_mr_model, capsys):
    from app.io import load_study

    ch2 = load_study(sources.fetch("mricron-data", log=lambda *a: None) / "usr/share/mricron/templates/ch2.nii.gz")
    vol = ch2.to_original(ch2.data)[::2, ::2, ::2]
    aff = ch2.original_affine.copy()
    aff[:3, :3] *= 2
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff
    nrrd.write(
        str(tmp_path / "head.nrrd"),
        vol,
        {"space": "left-posterior-superior", "space directions": lps[:3, :3].T, "space origin": lps[:3, 3]},
        index_order="F",
    )
    out, brain = tmp_path / "mask.nrrd", tmp_path / "brain.nrrd"
    rc = main(
        [
            "detect",
            str(tmp_path / "head.nrrd"),
            "--model",
            str(tiny_mr_model),
            "--out",
            str(out),
            "--base-only",
            "--brain-mask",
            str(brain),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    m, hm = nrrd.read(str(out), index_order="F")
    b, hb = nrrd.read(str(brain), index_order="F")
    assert m.shape == b.shape == vol.shape
    np.testing.assert_allclose(hm["space directions"], lps[:3, :3].T, atol=1e-9)
    np.testing.assert_allclose(hb["space origin"], lps[:3, 3], atol=1e-9)
    # tau 0 flags every analysed voxel: all inside the brain, none on the scalp
    assert m.sum() > 0 and not (m.astype(bool) & ~b.astype(bool)).any()
    assert 800 <= b.sum() * 8 / 1000 <= 2300  # ml
    # written beside the mask without being asked: the same brain mask (same grid, same format) and the record
    beside, hbe = nrrd.read(str(tmp_path / "mask_brainmask.nrrd"), index_order="F")
    np.testing.assert_array_equal(beside, b)
    np.testing.assert_allclose(hbe["space directions"], lps[:3, :3].T, atol=1e-9)
    rec = json.loads((tmp_path / "mask_preprocessing.json").read_text())
    assert rec["mask"] == "mask.nrrd" and rec["brain_mask"] == "mask_brainmask.nrrd"
    assert rec["brain_extraction"]["ran"] and rec["brain_extraction"]["ok"]
    assert rec["brain_extraction"]["status"] == "atlas" and "atlas" in rec["brain_extraction"]["method"]
    assert rec["brain_extraction"]["seconds"] > 0 and 800 <= rec["brain_extraction"]["volume_ml"] <= 2300
    assert rec["bias_correction"] == {"ran": True, "method": "N4 (SimpleITK)", "seconds": pytest.approx(
        rec["preprocessing"]["bias"]["seconds"])}  # fmt: skip
    assert rec["model"]["name"] == "tiny" and len(rec["model"]["card_sha256"]) == 64
    assert rec["eps"] == 0.0 and rec["tau"] == 0.0 and rec["base_only"] is True
    assert rec["timings"]["preprocess_s"] > 0 and rec["timings"]["solve_s"] >= 0
    assert rec["warnings"] == []  # a T1 head of 2 mm voxels for a T1 MR model


def test_head_ct_through_an_mr_model_warns(tmp_path, tiny_mr_model, capsys):
    from app.data.head_ct import INV3_MEMBER, read_inv3
    from app.io import atomic_save_nifti

    vol, aff, _ = read_inv3(sources.path_of("invesalius-examples", INV3_MEMBER, log=lambda *a: None))
    atomic_save_nifti(vol[::4, ::4, ::4], aff @ np.diag([4.0, 4.0, 4.0, 1.0]), tmp_path / "ct.nii.gz")
    rc = main(
        [
            "detect",
            str(tmp_path / "ct.nii.gz"),
            "--model",
            str(tiny_mr_model),
            "--out",
            str(tmp_path / "m.nii"),
            "--base-only",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0
    assert "warning: a CT study given to a model trained on MR" in err
    # the same warning in the record beside the mask; no extraction on CT, so no brain mask (none left behind)
    rec = json.loads((tmp_path / "m_preprocessing.json").read_text())
    assert len(rec["warnings"]) == 1 and rec["warnings"][0].startswith("a CT study given to a model trained on MR")
    assert rec["brain_extraction"]["ran"] is False and rec["brain_extraction"]["status"] == "not-applicable"
    assert rec["bias_correction"]["ran"] is False and rec["brain_mask"] is None
    assert not (tmp_path / "m_brainmask.nii").exists()


def test_skull_stripped_study_keeps_its_brain_and_no_n4(tmp_path, tiny_mr_model):
    """A skull-stripped input: no extraction, no N4; its non-zero part is the brain mask written beside the
    mask (NIfTI, the mask's grid), and a stale record of an earlier run is replaced atomically."""
    import nibabel as nib

    bet = sources.path_of("mricron-data", "usr/share/mricron/templates/ch2bet.nii.gz", log=lambda *a: None)
    img = nib.load(str(bet))
    vol = np.asarray(img.dataobj)[::3, ::3, ::3]
    nib.save(nib.Nifti1Image(vol, img.affine @ np.diag([3.0, 3.0, 3.0, 1.0])), str(tmp_path / "bet.nii.gz"))
    (tmp_path / "out_preprocessing.json").write_text("stale")
    out = str(tmp_path / "out.nii.gz")
    args = ["detect", str(tmp_path / "bet.nii.gz"), "--model", str(tiny_mr_model), "--out", out]
    assert main([*args, "--base-only", "--device", "cpu"]) == 0
    rec = json.loads((tmp_path / "out_preprocessing.json").read_text())
    assert rec["brain_extraction"]["status"] == "already-stripped" and not rec["brain_extraction"]["ran"]
    assert rec["bias_correction"]["ran"] is False
    brain = nib.load(str(tmp_path / "out_brainmask.nii.gz"))
    np.testing.assert_array_equal(np.asarray(brain.dataobj) > 0, vol > vol.min())
    np.testing.assert_allclose(brain.affine, nib.load(str(tmp_path / "out.nii.gz")).affine)
    assert not list(tmp_path.glob(".out*"))  # no temporary left behind
