"""``batch`` on a study straight from the scanner runs detect's pipeline (app/viewer/study_run.py): the brain is
extracted, the detection stays inside it, the brain mask is saved per study, and the warnings and preprocessing
record go into result.json (and beside the mask, as detect writes them)."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from app.batch.inputs import StudyRef
from app.batch.task import MASK, RESULT, BatchSettings, process_study
from app.cli import main
from app.data import sources


def _model(tmp_path):
    from app.nets import ModelConfig, create_model
    from app.nets.checkpoint import save_checkpoint

    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=16, latent_dim=4, width=4)).freeze()
    card = {
        "chosen": {"eps": 0.05, "tau": 0.0, "tau_base": 0.0},
        "domain": {"modality": "MR", "contrast": "T1", "max_slice_mm": 3.0, "skull_stripped": True},
    }
    return save_checkpoint(m, tmp_path / "models" / "tiny", card)


@pytest.fixture
def itk_one_thread():
    """ITK's multi-threaded Mattes metric sums in a varying order: two runs can differ by a few voxels of the
    brain mask. One thread makes two runs of the pipeline identical, which is what this test compares."""
    import SimpleITK as sitk

    before = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(before)


def test_batch_extracts_the_brain_and_records_preprocessing(tmp_path, capsys, itk_one_thread):
    img = nib.load(str(sources.path_of("mricron-data", "usr/share/mricron/templates/ch2.nii.gz", log=lambda *a: None)))
    vol = np.asarray(img.dataobj)[::2, ::2, ::5]  # 2 x 2 x 5 mm: thick slices for a model trained on <= 3 mm
    study_path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(vol, img.affine @ np.diag([2.0, 2.0, 5.0, 1.0])), str(study_path))
    stem = _model(tmp_path)
    settings = BatchSettings.for_checkpoint(stem, 0.0, 0.0, base_only=True, max_steps=5)
    ref = StudyRef("head", "file", str(study_path), (str(study_path),))
    res = process_study(ref, settings, str(tmp_path / "out"))
    assert res["status"] == "ok", res.get("error")
    folder = tmp_path / "out" / "head"
    on_disk = json.loads((folder / RESULT).read_text())
    assert len(on_disk["warnings"]) == 1 and on_disk["warnings"][0].startswith("slices 5.0 mm thick")
    pre = on_disk["preprocessing"]
    assert pre["brain_extraction"]["ran"] and pre["brain_extraction"]["status"] == "atlas"
    assert pre["bias_correction"]["ran"] and pre["bias_correction"]["method"] == "N4 (SimpleITK)"
    assert pre["warnings"] == on_disk["warnings"] and pre["base_only"] is True
    assert on_disk["timings"]["preprocess_s"] > 0
    brain = nib.load(str(folder / on_disk["outputs"]["brain_mask"]))
    mask = nib.load(str(folder / MASK))
    np.testing.assert_allclose(brain.affine, mask.affine)
    b, m = np.asarray(brain.dataobj) > 0, np.asarray(mask.dataobj) > 0
    assert 800 <= b.sum() * 20 / 1000 <= 2300  # ml
    assert m.any() and not (m & ~b).any()  # tau 0 flags every analysed voxel: all inside the brain
    beside = json.loads((folder / on_disk["outputs"]["preprocessing"]).read_text())
    assert beside["warnings"] == on_disk["warnings"] and beside["model"]["name"] == "tiny"
    # and the same study through detect gives the same mask and brain mask (one pipeline)
    det = tmp_path / "detect.nii.gz"
    args = ["detect", str(study_path), "--model", str(stem), "--out", str(det), "--base-only", "--device", "cpu"]
    assert main(args) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(np.asarray(nib.load(str(det)).dataobj) > 0, m)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "detect_brainmask.nii.gz")).dataobj) > 0, b)
