import json

import nibabel as nib
import numpy as np
import pytest

from app.data import brain_proxy
from app.data.phantom import brain_phantom
from app.data.splits import load_split, save_split
from app.errors import StudyError
from app.io import load_study


def test_split_round_trip_without_pickles(tmp_path, rng):
    x = rng.random((5, 1, 16, 16)).astype(np.float32)
    m = rng.random((5, 16, 16)) > 0.7
    save_split(tmp_path, "val", x, m, [f"s{i}" for i in range(5)])
    s = load_split(tmp_path, "val")
    np.testing.assert_array_equal(s.images, x)
    np.testing.assert_array_equal(s.masks, m)
    assert s.names[3] == "s3" and len(s) == 5
    assert np.load(tmp_path / "val" / "masks.npy").dtype == np.uint8
    save_split(tmp_path, "train", x, None, list("abcde"))
    assert load_split(tmp_path, "train").masks is None
    with pytest.raises(StudyError, match="not found"):
        load_split(tmp_path, "test")


def test_split_blocks_are_disjoint_with_gap():
    z = np.arange(20, 80)
    val, test = brain_proxy.split_blocks(z, gap=4)
    assert not set(val) & set(test)
    assert min(abs(int(a) - int(b)) for a in val for b in test) > 4
    assert 15 <= len(val) <= 25 and len(val) + len(test) == 60 - 8


def _phantom_file(tmp_path, name, shape, spacing, codes, seed):
    from nibabel import orientations as ornt

    vol, brain = brain_phantom(shape, seed=seed)
    t = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt(codes))
    aff = np.diag([*spacing, 1.0]) @ ornt.inv_ornt_aff(t, shape)
    p = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(ornt.apply_orientation(vol, t), aff), p)
    return p, brain


def test_build_runs_the_detect_path_on_every_split(tmp_path, monkeypatch):
    """The builder with phantoms in place of the package files: layout, counts, masks and meta."""
    src = tmp_path / "src"
    src.mkdir()
    train = []
    for i, codes in enumerate(("RAS", "LPI")):
        p, _ = _phantom_file(src, f"t{i}", (36, 40, 30), (1.5, 1.5, 1.5), codes, i)
        s = load_study(p)
        train.append((f"t{i}", s, s.data > 0))
    p, _ = _phantom_file(src, "held", (32, 36, 40), (2.0, 3.0, 2.0), "LSA", 9)
    held = load_study(p)
    monkeypatch.setattr(brain_proxy, "training_brains", lambda log=print: train)
    monkeypatch.setattr(brain_proxy, "held_out_subject", lambda log=print: (held, held.data > 0))
    monkeypatch.setattr(brain_proxy, "SIZE", 32)
    meta = brain_proxy.build(tmp_path / "out", seed=1, n_aug=1, val_real=2, test_real=2, log=lambda *a: None)
    out = tmp_path / "out"
    tr, va, te = (load_split(out, s) for s in ("train", "val", "test"))
    assert tr.images.shape[1:] == (1, 32, 32) and tr.masks is None
    assert 0 <= tr.images.min() and tr.images.max() <= 1.0 + 1e-6
    assert len(va.abnormal) > 0 and len(te.abnormal) > 0
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk["counts"] == meta["counts"]
    assert on_disk["counts"]["val"] == len(va) and on_disk["counts"]["test_abnormal"] == len(te.abnormal)
    # val and test come from disjoint slice blocks
    zv = {int(n.rsplit("z", 1)[1]) for n in va.names}
    zt = {int(n.rsplit("z", 1)[1]) for n in te.names}
    assert not zv & zt
    # lesion masks sit where the image differs from the lesion-free slice through the same pipeline
    from app.data.pipeline import prepare_study

    clean = prepare_study(held, 32)
    i = int(va.abnormal[0])
    z = int(va.names[i].rsplit("z", 1)[1])
    diff = np.abs(va.images[i, 0] - clean.x[z, 0])
    assert diff[va.masks[i]].mean() > 3 * diff[~va.masks[i]].mean()


def test_missing_package_message_says_what_to_run(tmp_path, monkeypatch):
    from app.data import sources

    monkeypatch.setenv("MATCHGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(sources.SourceError, match=r"apt-get download mricron-data && dpkg -x"):
        sources.fetch("mricron-data", log=lambda *a: None)
