import json

import nibabel as nib
import numpy as np
import pytest

from app.data import brain_proxy
from app.data.lesions import KINDS
from app.data.phantom import brain_phantom
from app.data.splits import KIND_NAMES, LESION_SPLITS, data_layout, load_split, load_volumes, save_split
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


def test_interleaved_blocks_alternate_over_the_whole_range_with_gaps():
    """Six blocks from the inferior end: test, val, test, val, test, val; GAP slices dropped between neighbours;
    both splits reach the extremes' neighbourhood (the first and last block) and the middle."""
    z = np.arange(27, 93)  # the held-out subject's 66 brain slices
    val, test = brain_proxy.interleaved_blocks(z, gap=4, n_blocks=6)
    assert not set(val) & set(test)
    assert min(abs(int(a) - int(b)) for a in val for b in test) == 5  # 4 slices dropped between blocks
    assert len(val) + len(test) == 66 - 5 * 4 and abs(len(val) - len(test)) <= 1
    runs = lambda a: np.split(a, np.flatnonzero(np.diff(a) > 1) + 1)  # noqa: E731
    assert len(runs(val)) == 3 and len(runs(test)) == 3
    assert test[0] == 27 and val[-1] == 92  # the inferior-most block is test's, the superior-most val's
    assert val.min() < 50 and test.max() > 70  # each split spans the range
    # the layout names: interleaved and the old middle one
    v2, t2 = brain_proxy.layout_blocks(z, "middle")
    np.testing.assert_array_equal(v2, brain_proxy.split_blocks(z)[0])
    with pytest.raises(ValueError, match="layout"):
        brain_proxy.layout_blocks(z, "random")
    with pytest.raises(ValueError, match="cannot hold"):
        brain_proxy.interleaved_blocks(np.arange(20), gap=4, n_blocks=6)


def test_data_layout_of_older_and_other_builds(tmp_path):
    """A brain-proxy meta without a layout is the middle one (the only layout before); other data sets, a
    missing or unreadable meta.json: None."""
    assert data_layout(tmp_path) is None
    (tmp_path / "meta.json").write_text(json.dumps({"name": "brain-proxy", "counts": {}}))
    assert data_layout(tmp_path) == "middle"
    (tmp_path / "meta.json").write_text(json.dumps({"name": "brats2021", "layout": "x"}))
    assert data_layout(tmp_path) is None
    (tmp_path / "meta.json").write_text("{not json")
    assert data_layout(tmp_path) is None


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
    # val and test come from disjoint slice blocks: the interleaved layout's three each, recorded in meta
    zv = {int(n.rsplit("z", 1)[1]) for n in va.names}
    zt = {int(n.rsplit("z", 1)[1]) for n in te.names}
    assert not zv & zt
    assert on_disk["layout"] == "interleaved"
    assert len(on_disk["layout_blocks"]["val"]) == 3 and len(on_disk["layout_blocks"]["test"]) == 3
    assert zv <= {z for a, b in on_disk["layout_blocks"]["val"] for z in range(a, b + 1)}
    assert on_disk["layout_blocks"]["test"][0][0] < on_disk["layout_blocks"]["val"][0][0]
    assert data_layout(out).startswith("interleaved: val z ") and "; test z " in data_layout(out)
    # lesion masks sit where the image differs from the lesion-free slice through the same pipeline
    from app.data.pipeline import prepare_study

    clean = prepare_study(held, 32)
    i = int(va.abnormal[0])
    z = int(va.names[i].rsplit("z", 1)[1])
    diff = np.abs(va.images[i, 0] - clean.x[z, 0])
    assert diff[va.masks[i]].mean() > 3 * diff[~va.masks[i]].mean()
    _check_lesion_splits_and_volumes(out, on_disk, tr, held)


def _check_lesion_splits_and_volumes(out, meta, tr, held):
    """kinds, test_b and the whole-volume folders of a build: shapes, agreement with the slice splits, meta."""
    S = tr.images.shape[-1]
    tb = load_split(out, "test_b", require_kinds=True)
    assert tb.images.shape[1:] == (1, S, S) and tb.masks.shape == tb.kinds.shape == (len(tb), S, S)
    assert np.load(out / "test_b" / "kinds.npy").dtype == np.uint8
    assert len(tb.abnormal) > 0 and meta["counts"]["test_b"] == len(tb)
    assert meta["counts"]["test_b_abnormal"] == len(tb.abnormal)
    # test_b: the test blocks, other lesions (style B, own seeds)
    assert {int(n.rsplit("z", 1)[1]) for n in tb.names} <= set(meta["lesions"]["test"]["block_z"])
    assert meta["lesions"]["test_b"]["block_z"] == meta["lesions"]["test"]["block_z"]
    assert meta["lesions"]["test_b"]["style"] == "B" and meta["lesions"]["test"]["style"] == "A"
    seeds_t = {r["seed"] for r in meta["lesions"]["test"]["realisations"]}
    seeds_b = {r["seed"] for r in meta["lesions"]["test_b"]["realisations"]}
    assert seeds_b and not seeds_b & seeds_t
    assert all(les["style"] == "B" for r in meta["lesions"]["test_b"]["realisations"] for les in r["lesions"])
    assert meta["kinds"] == list(KIND_NAMES)
    for split in LESION_SPLITS:
        ss = load_split(out, split, require_kinds=True)
        vs = load_volumes(out, split)
        R, Z = len(vs), vs.n_slices
        assert vs.images.shape == (R, Z, 1, S, S) and vs.images.dtype == np.float32
        assert vs.masks.shape == vs.kinds.shape == (R, Z, S, S) and vs.masks.dtype == bool
        # kinds agree with masks, and name only kinds the realisations' records have
        np.testing.assert_array_equal(ss.kinds > 0, ss.masks)
        np.testing.assert_array_equal(vs.kinds > 0, vs.masks)
        recs = meta["lesions"][split]["realisations"]
        for r in range(R):
            had = {les["kind"] for les in recs[r]["lesions"]}
            assert {KINDS[k - 1] for k in np.unique(vs.kinds[r][vs.kinds[r] > 0])} <= had
        # meta: seeds, slice order, counts
        assert vs.seeds == [r["seed"] for r in recs] and vs.z == meta["lesions"][split]["block_z"]
        assert vs.z == sorted(vs.z) and meta["volumes"][split]["shape"] == list(vs.images.shape)
        assert vs.style == meta["lesions"][split]["style"]
        kc = meta["kind_counts"][split]
        assert sum(kc["lesions"].values()) == sum(len(r["lesions"]) for r in recs)
        assert kc["pixels"] == {k: int((ss.kinds == i + 1).sum()) for i, k in enumerate(KINDS)}
        # every abnormal slice of a realisation in the volumes is that slice of the slice split, bit for bit;
        # every slice of the split is in the volumes
        index = {n: i for i, n in enumerate(ss.names)}
        n_abn = 0
        for r in range(R):
            assert len(vs.names[r]) == Z
            for j in vs.abnormal(r):
                i = index[vs.names[r][j]]
                np.testing.assert_array_equal(vs.images[r, j], ss.images[i])
                np.testing.assert_array_equal(vs.masks[r, j], ss.masks[i])
                np.testing.assert_array_equal(vs.kinds[r, j], ss.kinds[i])
                n_abn += 1
        assert n_abn == len(ss.abnormal)
        for i, n in enumerate(ss.names):
            if n.startswith("itk-normal-z"):
                z = int(n.rsplit("z", 1)[1])
                r = next(r for r in range(R) if not vs.masks[r, vs.z.index(z)].any())
                np.testing.assert_array_equal(vs.images[r, vs.z.index(z)], ss.images[i])
        # the clean block: the lesion-free subject's slices of the block, through the same pipeline
        assert vs.clean.shape == vs.images.shape[1:]
        from app.data.pipeline import prepare_study

        np.testing.assert_array_equal(vs.clean, prepare_study(held, S, slices=vs.z).x)
        # the normal slices of the volumes are counted in meta
        assert meta["volumes"][split]["normal_slices"] == int((~vs.masks.reshape(R, Z, -1).any(axis=2)).sum())


def test_old_builds_are_told_to_rebuild(tmp_path, rng):
    """A build from before test_b / kinds / volumes existed: the readers say what to run."""
    x = rng.random((3, 1, 8, 8)).astype(np.float32)
    m = rng.random((3, 8, 8)) > 0.6
    for split in ("val", "test"):
        save_split(tmp_path, split, x, m, ["a", "b", "c"])
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(StudyError, match=r"test_b.*rebuild it with `python main.py data brain-proxy"):
        load_split(tmp_path, "test_b")
    with pytest.raises(StudyError, match=r"kinds.npy not found.*rebuild"):
        load_split(tmp_path, "val", require_kinds=True)
    assert load_split(tmp_path, "val").kinds is None
    with pytest.raises(StudyError, match=r"val_volumes.*no whole-volume val set.*rebuild"):
        load_volumes(tmp_path, "val")
    with pytest.raises(StudyError, match="build the data set first"):
        load_volumes(tmp_path / "nothing", "test")


def test_kinds_must_agree_with_masks(tmp_path, rng):
    x = rng.random((2, 1, 8, 8)).astype(np.float32)
    m = np.zeros((2, 8, 8), bool)
    m[0, 2:4, 2:4] = True
    k = m.astype(np.uint8) * 2
    save_split(tmp_path, "val", x, m, ["a", "b"], kinds=k)
    np.testing.assert_array_equal(load_split(tmp_path, "val").kinds, k)
    bad = k.copy()
    bad[1, 0, 0] = 1  # a kind on a normal pixel
    with pytest.raises(ValueError, match="disagree"):
        save_split(tmp_path, "test", x, m, ["a", "b"], kinds=bad)
    assert not (tmp_path / "test").exists() or not (tmp_path / "test" / "images.npy").exists()
    np.save(tmp_path / "val" / "kinds.npy", bad)
    with pytest.raises(StudyError, match="disagree"):
        load_split(tmp_path, "val")


def test_missing_package_message_says_what_to_run(tmp_path, monkeypatch):
    from app.data import sources

    monkeypatch.setenv("MATCHGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(sources.SourceError, match=r"apt-get download mricron-data && dpkg -x"):
        sources.fetch("mricron-data", log=lambda *a: None)


def test_cli_passes_test_b_realisations_and_refuses_zero(tmp_path, monkeypatch, capsys):
    from app.cli import main

    seen = {}
    monkeypatch.setattr(brain_proxy, "build", lambda out, **kw: seen.update(kw) or {"counts": {}})
    assert main(["data", "brain-proxy", "--out", str(tmp_path), "--test-b-realisations", "3"]) == 0
    assert seen["test_b_real"] == 3 and seen["test_real"] == 5
    assert main(["data", "brain-proxy", "--out", str(tmp_path)]) == 0
    assert seen["test_b_real"] is None  # build() then uses --test-realisations
    capsys.readouterr()
    assert main(["data", "brain-proxy", "--out", str(tmp_path), "--test-b-realisations", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "realisation" in err[0]
