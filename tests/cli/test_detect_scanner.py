"""``detect`` on a skull-on study straight from the scanner: the brain found (atlas), the mask kept inside it and
written beside the result, NRRD in and out on the same grid, and a domain warning for a CT given to an MR model."""

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
