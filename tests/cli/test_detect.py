"""``detect`` end to end with a tiny saved model: outputs on the study's grid, card defaults, maps, and every
kind of bad input ending with exit code 2, one line on stderr and no output file."""

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel import orientations as ornt

from app.cli import main
from app.data.phantom import brain_phantom


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from app.nets import ModelConfig, create_model
    from app.nets.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=16, latent_dim=4, width=4)).freeze()
    save_checkpoint(m, d / "tiny", {"chosen": {"eps": 0.05, "tau": 0.25, "tau_base": 0.3}})
    save_checkpoint(m, d / "nocard", {})
    rgb = create_model(ModelConfig("ae-l1", image_size=16, channels=3, latent_dim=4, width=4)).freeze()
    save_checkpoint(rgb, d / "rgb", {"chosen": {"eps": 0.05, "tau": 0.25}})
    return d


@pytest.fixture
def study_file(tmp_path):
    """A phantom stored LSA at 2x2x3 mm."""
    vol, _ = brain_phantom((20, 18, 6), seed=4)
    t = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt("LSA"))
    aff = np.diag([2.0, 3.0, 2.0, 1.0]) @ ornt.inv_ornt_aff(t, vol.shape)
    p = tmp_path / "study.nii.gz"
    nib.save(nib.Nifti1Image(ornt.apply_orientation(vol, t).astype(np.int16), aff), p)
    return p


def _run(capsys, *argv):
    code = main(["detect", *map(str, argv), "--max-steps", "15"])
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_mask_and_maps_on_study_grid(tmp_path, tiny_model, study_file, capsys):
    out = tmp_path / "mask.nii.gz"
    code, stdout, err = _run(
        capsys, study_file, "--model", tiny_model / "tiny", "--out", out, "--maps", tmp_path / "maps"
    )
    assert code == 0, err
    assert "eps=0.05" in stdout and "tau=0.25" in stdout  # the card's choice
    src = nib.load(study_file)
    m = nib.load(out)
    assert m.shape == src.shape
    np.testing.assert_allclose(m.affine, src.affine, atol=1e-6)
    mask = np.asarray(m.dataobj)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    d = np.asarray(nib.load(tmp_path / "maps" / "difference.nii.gz").dataobj)
    s = nib.load(tmp_path / "maps" / "pseudo_normal.nii.gz")
    assert d.shape == s.shape == src.shape
    # the mask is exactly the difference map above tau, and nothing is flagged away from the head
    np.testing.assert_array_equal(mask.astype(bool), d > 0.25)
    from scipy import ndimage

    # (one model pixel is ~1.7 study voxels here; resampling spreads D by about that much)
    far = ~ndimage.binary_dilation(np.asarray(src.dataobj) > 0, iterations=4)
    assert far.any() and d[far].max() == 0.0


def test_base_only_equals_eps_zero_and_fallback_note(tmp_path, tiny_model, study_file, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        _run(
            capsys,
            study_file,
            "--model",
            tiny_model / "tiny",
            "--out",
            tmp_path / "a.nii",
            "--base-only",
            "--tau",
            "0.2",
            "--maps",
            a,
        )[0]
        == 0
    )
    assert (
        _run(
            capsys,
            study_file,
            "--model",
            tiny_model / "tiny",
            "--out",
            tmp_path / "b.nii",
            "--eps",
            "0",
            "--tau",
            "0.2",
            "--maps",
            b,
        )[0]
        == 0
    )
    np.testing.assert_array_equal(
        np.asarray(nib.load(a / "difference.nii.gz").dataobj), np.asarray(nib.load(b / "difference.nii.gz").dataobj)
    )
    code, _, err = _run(capsys, study_file, "--model", tiny_model / "nocard", "--out", tmp_path / "c.nii.gz")
    assert code == 0 and "fallback" in err


def _bad_inputs(tmp_path, study_file):
    cases = {}
    cases["missing"] = tmp_path / "nope.nii.gz"
    p = tmp_path / "text.nii.gz"
    p.write_text("this is not an image\n")
    cases["not-an-image"] = p
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    cases["unknown-type"] = p
    raw = study_file.read_bytes()
    p = tmp_path / "truncated.nii.gz"
    p.write_bytes(raw[: len(raw) // 2])
    cases["truncated"] = p
    p = tmp_path / "truncated.nii"
    p.write_bytes(gzip.decompress(raw)[:400])
    cases["truncated-raw"] = p
    p = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 4), np.nan, np.float32), np.eye(4)), p)
    cases["nan"] = p
    p = tmp_path / "const.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 4), 7, np.float32), np.eye(4)), p)
    cases["constant"] = p
    p = tmp_path / "emptydir"
    p.mkdir()
    cases["empty-folder"] = p
    p = tmp_path / "junkdir"
    p.mkdir()
    (p / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    (p / "readme.txt").write_text("no images here")
    cases["non-image-dicom-folder"] = p
    from PIL import Image

    p = tmp_path / "colour.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(p)
    cases["channel-mismatch"] = p
    return cases


def test_bad_inputs_exit_2_one_line_no_output(tmp_path, tiny_model, study_file, capsys):
    for name, path in _bad_inputs(tmp_path, study_file).items():
        out = tmp_path / f"out-{name}.nii.gz"
        code, _, err = _run(capsys, path, "--model", tiny_model / "tiny", "--out", out)
        assert code == 2, (name, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert not out.exists(), name
        assert not any(x.name.startswith(".out-") for x in tmp_path.iterdir()), name


def test_a_batch_output_folder_is_no_study(tmp_path, tiny_model, study_file, capsys):
    """A batch's --out named as detect's study: exit 2, one line that says what it is and opens it."""
    batch = tmp_path / "batch"
    code = main(["batch", str(study_file), "--model", str(tiny_model / "tiny"), "--out", str(batch),
                 "--local-threads", "--workers", "1", "--no-dashboard", "--no-progress"])  # fmt: skip
    capsys.readouterr()
    assert code == 0 and (batch / "worklist.json").is_file()
    out = tmp_path / "never.nii.gz"
    code, _, err = _run(capsys, batch, "--model", tiny_model / "tiny", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "a batch output folder" in err
    assert f"main.py view {batch}" in err and not out.exists()


def test_ground_truth_mask_dice_and_grid_mismatch(tmp_path, tiny_model, study_file, capsys):
    src = nib.load(study_file)
    gt = tmp_path / "gt.nii.gz"
    assert _run(capsys, study_file, "--model", tiny_model / "tiny", "--out", gt)[0] == 0
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(src.shape, np.uint8), src.affine), empty)
    # against its own output the Dice is 1; against an empty truth 0 (something flagged) or 1 (nothing flagged)
    code, stdout, err = _run(
        capsys, study_file, "--model", tiny_model / "tiny", "--out", tmp_path / "m.nii.gz", "--mask", gt
    )
    assert code == 0, err
    assert "Dice vs gt.nii.gz: 1.0000" in stdout
    flagged = bool(np.asarray(nib.load(gt).dataobj).any())
    _, stdout, _ = _run(
        capsys, study_file, "--model", tiny_model / "tiny", "--out", tmp_path / "m.nii.gz", "--mask", empty
    )
    assert f"Dice vs empty.nii.gz: {0.0 if flagged else 1.0:.4f}" in stdout
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), src.affine), bad)
    out = tmp_path / "never.nii.gz"
    code, _, err = _run(capsys, study_file, "--model", tiny_model / "tiny", "--out", out, "--mask", bad)
    assert code == 2 and "grid" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_options_exit_2(tmp_path, tiny_model, study_file, capsys):
    for extra in (["--tau", "1.5"], ["--eps", "-1"], ["--out-dir-missing"]):
        out = tmp_path / "o.nii.gz"
        args = [study_file, "--model", tiny_model / "tiny", "--out", out, *extra]
        with pytest.raises(SystemExit) as e:
            if extra[0] == "--out-dir-missing":
                raise SystemExit(
                    main(
                        [
                            "detect",
                            str(study_file),
                            "--model",
                            str(tiny_model / "tiny"),
                            "--out",
                            str(tmp_path / "no" / "m.nii.gz"),
                        ]
                    )
                )
            raise SystemExit(main(["detect", *map(str, args)]))
        assert e.value.code == 2
        assert not out.exists()
    code, _, err = _run(capsys, study_file, "--model", tiny_model / "rgb", "--out", tmp_path / "r.nii.gz")
    assert code == 2 and "channel" in err
    code, _, err = _run(capsys, study_file, "--model", "no-such-model", "--out", tmp_path / "r.nii.gz")
    assert code == 2 and "not found" in err


def test_rgb_picture_with_rgb_model(tmp_path, tiny_model, capsys):
    from PIL import Image

    rgb = np.zeros((24, 30, 3), np.uint8)
    rgb[3:21, 4:26] = (180, 90, 40)  # a fundus-like disc on black
    p = tmp_path / "fundus.png"
    Image.fromarray(rgb).save(p)
    out = tmp_path / "m.nii.gz"
    code, _, err = _run(capsys, p, "--model", tiny_model / "rgb", "--out", out, "--maps", tmp_path / "maps")
    assert code == 0, err
    assert nib.load(out).shape == (24, 30, 1)  # the picture's own pixel grid
    assert nib.load(tmp_path / "maps" / "pseudo_normal.nii.gz").shape == (24, 30, 1, 3)
    assert np.asarray(nib.load(out).dataobj)[0, 0, 0] == 0  # the black corner is never flagged


@pytest.fixture(scope="module")
def calibrated_model(tmp_path_factory):
    from app.nets import ModelConfig, create_model
    from app.nets.checkpoint import save_checkpoint
    from app.solver_options import FAST

    d = tmp_path_factory.mktemp("calibrated")
    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=16, latent_dim=4, width=4)).freeze()
    card = {
        "chosen": {"eps": 0.05, "tau": 0.25, "tau_base": 0.3},
        "calibration": {"settings": {"max_steps": 15, "solver": "fast", "solver_options": FAST.__dict__}},
    }
    save_checkpoint(m, d / "cal", card)
    return d / "cal"


@pytest.mark.parametrize(
    ("extra", "warned"),
    [
        ([], False),
        (["--solver", "fast", "--max-steps", "15"], False),  # FAST at the card's budget: the card's operator
        (["--solver", "fast"], True),  # FAST's own budget (100 steps) is not the card's 15
        (["--solver", "paper", "--max-steps", "15"], True),
        (["--max-steps", "7"], True),
    ],
)
def test_another_solver_than_the_cards_warns_in_one_line(tmp_path, calibrated_model, study_file, capsys, extra, warned):
    # the card's tau was chosen with spg/bf16 at 15 steps
    argv = [study_file, "--model", calibrated_model, "--out", tmp_path / "m.nii.gz"]
    code = main(["detect", *map(str, argv), *extra])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "eps/tau were chosen" in ln]
    assert len(lines) == (1 if warned else 0), err
    if warned:
        assert lines[0].startswith("warning: ") and "spg/bf16, 15 steps" in lines[0]


@pytest.mark.parametrize("native", [True, False])
def test_a_cpu_without_bfloat16_runs_the_search_in_float32_and_says_so(
    tmp_path, calibrated_model, study_file, capsys, monkeypatch, native
):
    """The card asks for bfloat16 search steps: on a CPU without bfloat16 arithmetic ``detect`` runs them in
    float32 (emulated bfloat16 is many times slower) and says so in one note; on one with it, no note."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    code = main(["detect", str(study_file), "--model", str(calibrated_model), "--out", str(tmp_path / "m.nii.gz")])
    err = capsys.readouterr().err
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if "float32 search steps" in ln]
    assert len(notes) == (0 if native else 1), err
    if notes:
        assert notes[0].startswith("note: float32 search steps instead of the card's bfloat16")
    assert "eps/tau were chosen" not in err  # the card's operator, not another solver


def test_threads_and_median_options(tmp_path, tiny_model, study_file, capsys):
    before = torch.get_num_threads()
    try:
        code, _, err = _run(capsys, study_file, "--model", tiny_model / "tiny", "--out", tmp_path / "a.nii.gz",
                            "--threads", "1", "--maps", tmp_path / "a")  # fmt: skip
        assert code == 0, err and torch.get_num_threads() == 1
        code, _, err = _run(capsys, study_file, "--model", tiny_model / "tiny", "--out", tmp_path / "b.nii.gz",
                            "--median", "3", "--maps", tmp_path / "b")  # fmt: skip
        assert code == 0, err
    finally:
        torch.set_num_threads(before)
    d_plain = np.asarray(nib.load(tmp_path / "a" / "difference.nii.gz").dataobj)
    d_med = np.asarray(nib.load(tmp_path / "b" / "difference.nii.gz").dataobj)
    assert not np.allclose(d_plain, d_med)  # the filter changed the map ...
    assert d_med.max() <= d_plain.max() + 1e-6  # ... and a median never exceeds the largest value it sees
    for bad in (["--threads", "0"], ["--median", "-1"]):
        code, _, err = _run(capsys, study_file, "--model", tiny_model / "tiny", "--out", tmp_path / "c.nii.gz", *bad)
        assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "c.nii.gz").exists()


@pytest.mark.parametrize("solver", ["card", "fast"])
def test_the_solver_batch_does_not_change_the_result(tmp_path, tiny_model, study_file, capsys, solver):
    """--batch-size trades memory for speed only: every slice's answer is its own (per-image solver state), in
    float32 and in the fast bfloat16 search alike, so the default batch (SOLVE_BATCH) may be chosen on memory."""
    maps = {}
    for b in ("2", "7"):
        code, stdout, err = _run(capsys, study_file, "--model", tiny_model / "tiny", "--out", tmp_path / f"m{b}.nii.gz",
                                 "--maps", tmp_path / b, "--batch-size", b, "--solver", solver)  # fmt: skip
        assert code == 0, err
        assert "slices analysed" in stdout
        maps[b] = np.asarray(nib.load(tmp_path / b / "difference.nii.gz").dataobj)
    assert maps["2"].shape[2] > 2 and maps["2"].any()  # more slices than a batch of 2, and a map to compare
    np.testing.assert_allclose(maps["2"], maps["7"], atol=1e-6)
    m2, m7 = (np.asarray(nib.load(tmp_path / f"m{b}.nii.gz").dataobj) for b in ("2", "7"))
    np.testing.assert_array_equal(m2, m7)


def test_an_ensemble_card_averages_its_members_maps(tmp_path, tiny_model, study_file, capsys):
    """Two copies of one model with scales c and c / 3: the ensemble's map is (D / c + 3 D / c) / 2 times c (the
    first member's unit) = 2 D, exactly twice the model's own map; tau is the ensemble card's."""
    import shutil

    from viewer_study import write_ensemble

    for name in ("a", "b"):
        for suffix in (".json", ".safetensors"):
            shutil.copy((tiny_model / "tiny").with_suffix(suffix), (tmp_path / name).with_suffix(suffix))
    write_ensemble(tmp_path / "pair.json", [(tmp_path / "a", 0.3), (tmp_path / "b", 0.1)], eps=0.05, tau=0.4,
                   tau_base=0.45)  # fmt: skip
    code, stdout, err = _run(capsys, study_file, "--model", tiny_model / "tiny", "--out", tmp_path / "one.nii.gz",
                             "--maps", tmp_path / "one")  # fmt: skip
    assert code == 0, err
    code, stdout, err = _run(capsys, study_file, "--model", tmp_path / "pair.json", "--out", tmp_path / "two.nii.gz",
                             "--maps", tmp_path / "two")  # fmt: skip
    assert code == 0, err
    assert "model pair, eps=1, tau=0.4" in stdout
    one = np.asarray(nib.load(tmp_path / "one" / "difference.nii.gz").dataobj)
    two = np.asarray(nib.load(tmp_path / "two" / "difference.nii.gz").dataobj)
    assert one.max() > 0
    np.testing.assert_allclose(two, 2 * one, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "two.nii.gz").dataobj).astype(bool), two > 0.4)
    # a member changed since the ensemble was calibrated: exit 2, one line, no mask written
    (tmp_path / "b.json").write_text((tmp_path / "b.json").read_text().replace("0.25", "0.26"))
    code, stdout, err = _run(capsys, study_file, "--model", tmp_path / "pair.json", "--out", tmp_path / "x.nii.gz")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "changed since the ensemble" in err
    assert not (tmp_path / "x.nii.gz").exists()
