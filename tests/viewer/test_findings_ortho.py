"""Qt-free parts of the findings list, saved batch results and orthogonal views: a saved study read back onto the
canonical grid of a study stored in another orientation, labels that match the listed findings, outlines of the
selected finding, and the plane/cursor arithmetic of the coronal and sagittal reformats."""

import json

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt

from app.core.findings import find_findings
from app.io import load_study, save_mask, save_on_study_grid
from app.viewer.findings import FindingsList, SavedResult, outline_into
from app.viewer.ortho import Cursor, move_in_plane, plane, point_in_plane, screen_to_voxel, voxel_to_screen
from app.viewer.worklist import Worklist


@pytest.fixture
def saved(tmp_path):
    """A study stored LSA, and a batch folder with its mask (two known findings), D map and result.json."""
    canon = np.zeros((12, 10, 8), np.float32)
    canon[1:11, 1:9, 1:7] = 100.0
    t = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt("LSA"))
    aff = np.diag([2.0, 3.0, 2.0, 1.0]) @ ornt.inv_ornt_aff(t, canon.shape)
    src = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(ornt.apply_orientation(canon, t), aff), src)
    study = load_study(src)
    mask = np.zeros(study.shape, bool)
    mask[2:5, 2:4, 1:4] = True  # 18 voxels
    mask[8:10, 6:8, 5:6] = True  # 4 voxels
    d = mask * 0.7 + 0.05
    folder = tmp_path / "out" / "s"
    folder.mkdir(parents=True)
    save_mask(study, mask, folder / "mask.nii.gz")
    save_on_study_grid(study, d, folder / "difference.nii.gz")
    fs = find_findings(mask, d, study.affine)
    r = {
        "id": "s",
        "status": "ok",
        "score": fs[0].volume_ml,
        "flagged_ml": 0.1,
        "peak_slice": 2,
        "n_findings": 2,
        "eps": 0.1,
        "tau": 0.5,
        "settings": {"model": "tiny"},
        "input": {"kind": "file", "source": str(src), "files": [str(src)]},
        "outputs": {"mask": "mask.nii.gz", "difference": "difference.nii.gz"},
        "findings": [f.to_dict() for f in fs],
    }
    (folder / "result.json").write_text(json.dumps(r))
    return study, mask, d, tmp_path / "out"


def test_saved_result_on_canonical_grid(saved):
    study, mask, d, out = saved
    entry = Worklist(out).entries[0]
    sr = SavedResult.load(entry, study)
    np.testing.assert_array_equal(sr.mask, mask)
    np.testing.assert_allclose(sr.d, d, atol=1e-6)
    assert (sr.model, sr.eps, sr.tau, sr.peak_slice) == ("tiny", 0.1, 0.5, 2)
    r = sr.slice_result(2)
    np.testing.assert_array_equal(r.d > sr.tau, mask[:, :, 2])
    fl = sr.findings
    assert [f.voxels for f in fl.findings] == [18, 4] and fl.source == "result.json"
    assert (fl.labels == 1).sum() == 18 and (fl.labels == 2).sum() == 4
    assert fl.rows()[0] == ("1", "0.750", f"{18 * 0.012:.3f}", "6 x 6 x 6", "0.750", "1-3")  # equal peaks: larger first


def test_mask_only_result_and_outline(saved):
    study, mask, _d, out = saved
    rj = out / "s" / "result.json"
    r = json.loads(rj.read_text())
    r["outputs"] = {"mask": "mask.nii.gz"}
    del r["findings"]
    rj.write_text(json.dumps(r))
    sr = SavedResult.load(Worklist(out).entries[0], study)
    assert sr.d is None
    np.testing.assert_array_equal(sr.d_volume() > sr.tau, mask)  # the mask itself, whatever tau in [0, 1)
    fl = sr.findings
    assert [f.voxels for f in fl.findings] == [18, 4]  # measured from the mask
    assert [row[1] for row in fl.rows()] == ["-", "-"]  # no D saved: no peak, the size order
    assert fl.outline_on(2) is None
    f = fl.select(0)
    ring = fl.outline_on(f.centre_slice)
    assert ring is not None and ring.sum() == 6 and (ring <= mask[:, :, f.centre_slice]).all()  # a 3x2 patch: all edge
    rgba = np.zeros((*mask.shape[:2], 4), np.uint8)
    drawn = outline_into(rgba, ring)
    assert (drawn[ring] == (0, 255, 255, 255)).all() and not drawn[~ring].any() and not rgba.any()


def test_volume_run_findings():
    d = np.zeros((6, 6, 4), np.float32)
    d[1:3, 1:3, 1] = 0.9
    fl = FindingsList.from_volume(d, 0.5, np.diag([1.0, 1.0, 2.0, 1.0]))
    assert len(fl) == 1 and fl.findings[0].volume_ml == pytest.approx(4 * 2 / 1000) and fl.source == "volume run"


def test_ortho_planes_and_cursor():
    vol = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    c = Cursor(1, 2, 3)
    assert plane(vol, "coronal", c).shape == (4, 6) and (plane(vol, "coronal", c) == vol[:, 2, :]).all()
    assert plane(vol, "sagittal", c).shape == (5, 6) and (plane(vol, "sagittal", c) == vol[1, :, :]).all()
    assert (plane(vol, "axial", c) == vol[:, :, 3]).all()
    assert point_in_plane("coronal", c) == (1, 3) and point_in_plane("sagittal", c) == (2, 3)
    assert move_in_plane("coronal", c, 3, 0) == Cursor(3, 2, 0)  # y (the coronal cut) stays
    assert move_in_plane("sagittal", c, 4, 5) == Cursor(1, 4, 5)  # x stays
    assert Cursor(9, -1, 2).clamp(vol.shape) == Cursor(3, 0, 2)
    for h in range(4):
        assert screen_to_voxel(*voxel_to_screen(h, 2, 4), 4) == (h, 2)
