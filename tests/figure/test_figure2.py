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


def test_figure_layout_as_in_the_paper(case):
    """Input and ground truth once in column 0; per model two columns (base, +MG) with rows pseudo-normal,
    difference, detection; each detection's Dice in a box; a TP/FP/FN/TN legend; one colour bar."""
    from app.core.metrics import dice
    from app.figure import case_columns, figure2
    from app.figure.figure2 import ROWS, _crop_box
    from app.viewer.compute import ModelSession
    from app.viewer.loading import open_study
    from app.viewer.slices import to_screen

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
    assert ROWS == ("Pseudo-normal", "Difference", "Detection")
    panels = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(panels) == 2 + 3 * 4 and len(fig.axes) == len(panels) + 1  # input, truth, 3 rows x 4 columns, bar
    by = {a.get_label(): a for a in panels}

    def cell(ax):
        ss = ax.get_subplotspec()
        return ss.rowspan.start, ss.colspan.start

    # column 0: the input beside the pseudo-normals (row 0), the ground truth beside the detections (row 2)
    assert cell(by["input"]) == (0, 0) and cell(by["ground truth"]) == (2, 0)
    assert by["input"].get_title() == "Input" and by["ground truth"].get_title() == "Ground truth"
    assert not [a for a in panels if cell(a) == (1, 0)]  # nothing else in the first column
    np.testing.assert_array_equal(
        by["ground truth"].get_images()[0].get_array(),
        to_screen(gt[_crop_box(sessions[0].slices.normalized()[:, :, 3], gt)]).astype(float),
    )
    model_cols = sorted({cell(a)[1] for a in panels if a.get_label() not in ("input", "ground truth")})
    for j, c in enumerate(cols):
        col = model_cols[j]
        for i, row in enumerate(ROWS):
            ax = by[f"{row.lower()}/{j}"]
            assert cell(ax) == (i, col) and ax.get_images()
        assert by[f"pseudo-normal/{j}"].get_title() == c.title  # short: one line
        boxed = [t for t in by[f"detection/{j}"].texts if t.get_gid() == "dice"]
        assert len(boxed) == 1 and boxed[0].get_text() == f"Dice {c.dice:.3f}"
        assert boxed[0].get_bbox_patch() is not None  # boxed, as in the paper
    assert [by[f"{r.lower()}/0"].get_ylabel() for r in ROWS] == list(ROWS)
    assert model_cols == [2, 3, 4, 5]  # after the gap column, side by side
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["TP", "FP", "FN", "TN"]
    colours = [tuple(np.round(np.asarray(h.get_facecolor()[:3]) * 255).astype(int)) for h in legend.legend_handles]
    assert colours == [(255, 0, 0), (0, 0, 255), (0, 255, 0), (0, 0, 0)]
    # the detection panel's pixels: TP red, FP blue, FN green, TN black
    box = _crop_box(sessions[0].slices.normalized()[:, :, 3], gt)
    for j, c in enumerate(cols):
        det = np.asarray(by[f"detection/{j}"].get_images()[0].get_array())
        pred = to_screen((c.result.d > c.tau)[box])
        g = to_screen(gt[box])
        assert (pred & g).any() and (pred & ~g).any() and (~pred & ~g).any()
        assert (det[pred & g] == [255, 0, 0]).all()
        assert (det[pred & ~g] == [0, 0, 255]).all()
        assert (det[~pred & g] == [0, 255, 0]).all()
        assert (det[~pred & ~g] == [0, 0, 0]).all()


def test_figure_rendered_pixels_show_the_detection_colours(case):
    """The rendered canvas itself: a detection panel holds red (TP), blue (FP) and black (TN) pixels; the grey
    input panel holds none of them."""
    from app.figure import case_columns, figure2
    from app.viewer.compute import ModelSession
    from app.viewer.loading import open_study

    sl = open_study(case["study"], case["mask"])
    sess = ModelSession.load("tiny", sl, "cpu")
    cols = case_columns([sess], 3)
    fig = figure2(sess.slices, 3, cols)
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    h = buf.shape[0]

    def pixels(label):
        ax = next(a for a in fig.axes if a.get_label() == label)
        x0, y0, x1, y1 = ax.get_window_extent().extents
        return buf[int(h - y1) + 2 : int(h - y0) - 2, int(x0) + 2 : int(x1) - 2].reshape(-1, 3)

    colours = {tuple(p) for p in pixels("detection/0")}
    assert {(255, 0, 0), (0, 0, 255), (0, 0, 0)} <= colours
    px = pixels("input")
    grey = (np.abs(px[:, 0] - px[:, 1]) < 3) & (np.abs(px[:, 1] - px[:, 2]) < 3)
    assert grey.all()


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
    for row in ("Pseudo-normal", "Input", "Difference", "Detection", "Ground truth", "tiny2 +MG", "TP", "FN"):
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


def test_crop_uses_the_one_foreground_threshold():
    # just above the threshold is anatomy, just below is air; a literal of its own in figure2 would disagree
    from app.figure.figure2 import _crop_box
    from app.foreground import FOREGROUND_THRESHOLD

    x = np.zeros((40, 40), np.float32)
    x[10, 12] = FOREGROUND_THRESHOLD * 1.01
    x[30, 35] = FOREGROUND_THRESHOLD * 0.99
    assert _crop_box(x, None, margin=0) == (slice(10, 11), slice(12, 13))
    x[30, 35] = FOREGROUND_THRESHOLD * 1.01
    assert _crop_box(x, None, margin=0) == (slice(10, 31), slice(12, 36))


def test_long_model_names_wrap_and_titles_never_overlap(case):
    """An ensemble's name (e.g. dae+dae-cover-base+ae-l1 +MG) is longer than a panel is wide: the title breaks
    before a "+" or at a space, and no two columns' titles overlap once drawn."""
    from app.figure import case_columns, figure2
    from app.figure.figure2 import TITLE_CHARS, wrap_title
    from app.viewer.compute import ModelSession
    from app.viewer.loading import open_study

    assert wrap_title("dae+dae-cover-base+ae-l1 +MG") == "dae+dae-cover-base\n+ae-l1 +MG"
    assert wrap_title("tiny +MG") == "tiny +MG" and wrap_title("x" * 30) == "x" * 30  # nowhere to break
    names = ("first+long-member-name", "second+long-member-name")
    for i, n in enumerate(names):
        write_model(case["tmp"] / "models", n, seed=i)
    sl = open_study(case["study"], case["mask"])
    sessions = [ModelSession.load(n, sl, "cpu") for n in names]
    cols = case_columns(sessions, 3)
    fig = figure2(sessions[0].slices, 3, cols)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    titled = sorted((a for a in fig.axes if a.get_label().startswith("pseudo-normal/")), key=lambda a: a.get_label())
    boxes = []
    for ax, c in zip(titled, cols, strict=True):
        text = ax.get_title()
        assert text.replace("\n", "").replace(" ", "") == c.title.replace(" ", "")
        assert max(len(line) for line in text.splitlines()) <= TITLE_CHARS
        boxes.append(ax.title.get_window_extent(renderer))
    boxes.sort(key=lambda b: b.x0)
    assert all(left.x1 < right.x0 for left, right in zip(boxes[:-1], boxes[1:], strict=True))
