"""Figure-2 export: panels, colours, Dice labels, formats, the figure command."""

import os

import numpy as np
import pytest
from viewer_study import write_model, write_study


@pytest.fixture
def case(tmp_path, monkeypatch):
    import app.nets.zoo as zoo

    study, mask = write_study(tmp_path / "study")
    write_model(tmp_path / "models", "tiny")
    write_model(tmp_path / "models", "tiny2", seed=1)
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path / "models")
    return {"study": study, "mask": mask, "tmp": tmp_path}


def test_figure_has_rows_columns_and_dice_labels(case):
    from app.core.metrics import dice
    from app.figure import case_columns, figure2
    from app.figure.figure2 import ROWS
    from app.viewer.compute import ModelSession
    from app.viewer.loading import open_study

    sl = open_study(case["study"], case["mask"])
    sessions = [ModelSession.load(n, sl, "cpu") for n in ("tiny", "tiny2")]
    cols = case_columns(sessions, 3)
    assert [c.title for c in cols] == ["tiny", "tiny +MG", "tiny2", "tiny2 +MG"]
    assert [c.result.eps for c in cols] == [0.0, 0.2, 0.0, 0.2]  # from the cards
    assert [c.tau for c in cols] == [0.2, 0.15, 0.2, 0.15]
    gt = sl.gt[:, :, 3]
    for c in cols:
        assert c.dice == pytest.approx(dice(c.result.d > c.tau, gt))
    fig = figure2(sessions[0].slices, 3, cols)
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    grid = [a for a in axes if a.get_images()]
    assert len(grid) == len(ROWS) * 4
    assert [fig.axes[i].get_ylabel() for i in range(0, 20, 4)] == list(ROWS)
    labels = [a.get_xlabel() for a in fig.axes[12:16]]  # the detection row (row 3 of 5, 4 columns)
    for c, lab in zip(cols, labels, strict=True):
        assert lab.startswith(f"Dice {c.dice:.3f}")
    # the detection panel is coloured as in Figure 2: TP red, FP blue, FN green, TN black
    det = fig.axes[12].get_images()[0].get_array()
    from app.figure.figure2 import _crop_box
    from app.viewer.slices import to_screen

    box = _crop_box(sessions[0].slices.normalized()[:, :, 3], gt)
    pred = to_screen((cols[0].result.d > cols[0].tau)[box])
    g = to_screen(gt[box])
    assert g.any() and pred.any()
    assert (np.asarray(det)[pred & g] == [255, 0, 0]).all()
    assert (np.asarray(det)[pred & ~g] == [0, 0, 255]).all()
    assert (np.asarray(det)[~pred & ~g] == [0, 0, 0]).all()


def test_figure_command_svg_keeps_rows_and_dice_as_text(case, capsys):
    from app.cli import main

    out = case["tmp"] / "fig.svg"
    args = ["figure", str(case["study"]), "--mask", str(case["mask"]), "--slice", "3", "--models", "tiny,tiny2"]
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    dice_values = [ln.split("dice=")[1].split()[0] for ln in printed.splitlines() if "dice=" in ln]
    assert len(dice_values) == 4
    text = out.read_text()
    for d in dice_values:
        assert f"Dice {d}" in text  # text kept as text, with the printed values
    for row in ("Pseudo-normal", "Input", "Difference", "Detection", "Ground truth", "tiny2 +MG"):
        assert row in text
    assert not list(out.parent.glob(".fig*"))  # no temporary leftovers
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make it


def test_figure_command_pdf_and_png(case):
    from app.cli import main

    for suffix, magic in ((".pdf", b"%PDF"), (".png", b"\x89PNG")):
        out = case["tmp"] / f"fig{suffix}"
        args = ["figure", str(case["study"]), "--mask", str(case["mask"]), "--models", "tiny", "--out", str(out)]
        assert main(args) == 0
        assert out.read_bytes()[:4] == magic


def test_figure_without_mask_picks_middle_slice_and_says_no_ground_truth(case, capsys):
    from app.cli import main

    out = case["tmp"] / "nomask.svg"
    assert main(["figure", str(case["study"]), "--models", "tiny", "--out", str(out), "--device", "cpu"]) == 0
    text = out.read_text()
    assert "slice 3" in text and "no ground truth" in text and "dice=n/a" in capsys.readouterr().out


def test_figure_bad_inputs_exit_2_without_output(case, capsys):
    from app.cli import main

    out = case["tmp"] / "x.pdf"
    assert main(["figure", str(case["study"]), "--out", str(case["tmp"] / "x.gif")]) == 2
    assert main(["figure", str(case["study"]), "--slice", "99", "--models", "tiny", "--out", str(out)]) == 2
    assert main(["figure", str(case["study"]), "--models", "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("matchgen figure: error:") for e in err)
    assert not out.exists()
