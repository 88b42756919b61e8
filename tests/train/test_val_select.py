"""scripts/val_select.py: models compared on validation realisations that chose nothing, with known answers."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.data.splits import load_split, save_volumes

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "val_select.py"


def _script():
    spec = importlib.util.spec_from_file_location("val_select", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_val_select_scores_the_realisations_after_the_choosing_ones(dataset, tmp_path, capsys):
    val = load_split(dataset, "val")
    # four realisations of three slices: two with the bright square (one 3-D lesion of 2 x 36 voxels), one normal
    block = val.images[[0, 1, 3]]
    masks = val.masks[[0, 1, 3]].astype(bool)
    names = [[f"r{r}z{z}" for z in range(3)] for r in range(4)]
    m4 = np.stack([masks] * 4)
    save_volumes(
        dataset, "val", np.stack([block] * 4), m4, m4.astype(np.uint8), names, {"seeds": [0, 1, 2, 3], "z": [0, 1, 2]}
    )
    out = tmp_path / "m"
    args = ["train", "ae-l1", "--data", str(dataset), "--out", str(out), "--epochs", "1", "--width", "4"]
    assert main([*args, "--latent-dim", "8", "--batch-size", "8", "--quiet"]) == 0
    argv = ["calibrate", str(out), "--data", str(dataset), "--subset", "2", "--extend", "0", "--no-postprocess"]
    assert main([*argv, "--max-steps", "2"]) == 0

    vs = _script()
    report = tmp_path / "sel.json"
    cmd = [str(dataset), str(out), "--skip", "2", "--base", "--intensity", "--threads", "1", "--json", str(report)]
    assert vs.main(cmd) == 0
    rows = json.loads(report.read_text())["rows"]
    assert list(rows) == ["m + MG", "m", "intensity threshold"]
    assert json.loads(report.read_text())["seeds"] == [2, 3]
    for r in rows.values():
        assert len(r["volume_dice"]) == 2  # the two realisations after --skip
        assert sum(b["of"] for b in r["lesions_by_size"]) == 2  # one lesion each
        assert [b["of"] for b in r["lesions_by_size"]] == [0, 0, 2, 0]  # 72 voxels: the 60-199 bin
    assert rows["m + MG"]["paired_vs_first"]["mean"] == 0.0
    # the square is the brightest thing in the image: the threshold chosen on the first two finds it exactly
    floor = rows["intensity threshold"]
    assert floor["volume_dice"] == [1.0, 1.0] and floor["fp_pixels_per_normal_slice"] == 0.0
    assert floor["lesions_by_size"][2] == {"found": 2, "of": 2, "voxel_fraction": 1.0}
    assert floor["voxels"] == {"tp": 144, "fp": 0, "fn": 0}  # 2 x 72 voxels, exactly
    assert floor["voxel_precision"] == 1.0 and floor["voxel_recall"] == 1.0
    for r in rows.values():  # every lesion voxel is flagged or missed
        assert r["voxels"]["tp"] + r["voxels"]["fn"] == 144
        assert r["voxel_recall"] == pytest.approx(r["voxels"]["tp"] / 144)
    # the kinds map says 1 (bright) on the lesion: both lesions are counted there, none elsewhere
    assert floor["lesions_by_kind"]["bright"] == {"found": 2, "of": 2, "voxel_fraction": 1.0}
    assert all(b["of"] == 0 for k, b in floor["lesions_by_kind"].items() if k != "bright")
    assert floor["paired_vs_first"]["mean"] == pytest.approx(1.0 - rows["m + MG"]["volume_dice_mean"])
    assert "| intensity threshold | 0 |" in capsys.readouterr().out
    # nothing left after the choosing realisations: a clear error
    assert vs.main([str(dataset), str(out), "--skip", "3"]) == 2
    assert "--val-realisations" in capsys.readouterr().err
    # two cards with one name (the zoo's and a copy elsewhere) get two rows each, not one overwriting the other
    import shutil

    (tmp_path / "copy").mkdir()
    for f in tmp_path.glob("m.*"):
        shutil.copy(f, tmp_path / "copy" / f.name)
    assert vs.main([str(dataset), str(out), str(tmp_path / "copy" / "m"), "--skip", "2", "--base", "--threads", "1",
                    "--json", str(report)]) == 0  # fmt: skip
    assert list(json.loads(report.read_text())["rows"]) == ["m + MG", "m", f"{tmp_path / 'copy' / 'm'} + MG",
                                                            str(tmp_path / "copy" / "m")]  # fmt: skip
    assert vs.main([str(dataset), str(out), str(out), "--skip", "2"]) == 2
    assert "given twice" in capsys.readouterr().err
    # the test realisations, for a report once a choice is made: the same rows from the test volumes
    test_masks = np.zeros_like(m4)
    save_volumes(dataset, "test", np.stack([block] * 4), test_masks, test_masks.astype(np.uint8), names,
                 {"seeds": [10, 11, 12, 13], "z": [0, 1, 2]})  # fmt: skip
    cmd = [str(dataset), str(out), "--skip", "1", "--split", "test", "--threads", "1", "--json", str(report)]
    assert vs.main(cmd) == 0
    doc = json.loads(report.read_text())
    assert doc["split"] == "test" and doc["seeds"] == [11, 12, 13] and list(doc["rows"]) == ["m + MG"]
    assert doc["rows"]["m + MG"]["voxels"]["tp"] == 0 and doc["rows"]["m + MG"]["voxels"]["fn"] == 0  # no lesion
    # the threshold on a test split takes its tau from validation (the first --intensity-choose realisations):
    # the same tau the validation run chose on its first two, never one chosen on test
    cmd = [str(dataset), "--split", "test", "--skip", "1", "--intensity", "--intensity-choose", "2"]
    cmd += ["--json", str(report)]
    assert vs.main(cmd) == 0
    t_floor = json.loads(report.read_text())["rows"]["intensity threshold"]
    assert t_floor["tau"] == floor["tau"] and len(t_floor["volume_dice"]) == 3
    assert vs.main([str(dataset), str(out), "--split", "test", "--intensity", "--intensity-choose", "0"]) == 2
    assert "--intensity-choose" in capsys.readouterr().err
    # an ensemble card (scripts/ensemble_card.py, calibrated on the first two realisations) is scored like a model
    spec = importlib.util.spec_from_file_location("ensemble_card", SCRIPT.parent / "ensemble_card.py")
    ec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ec)
    pair = tmp_path / "pair.json"
    members = [str(out), str(tmp_path / "copy" / "m")]
    assert ec.main([str(dataset), *members, "--out", str(pair), "--first", "2", "--threads", "1"]) == 0
    card = json.loads(pair.read_text())
    assert card["family"] == "ensemble" and [m["model"] for m in card["members"]] == members
    assert card["chosen_volume"]["n_volumes"] == 2 and card["calibration"]["seeds"] == [0, 1]
    assert vs.main([str(dataset), str(pair), "--skip", "2", "--base", "--threads", "1", "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["rows"]
    assert list(rows) == ["pair + MG", "pair"] and all(len(r["volume_dice"]) == 2 for r in rows.values())
    assert rows["pair + MG"]["tau"] == card["chosen_volume"]["tau"]
    assert ec.main([str(dataset), str(out), "--out", str(pair)]) == 2  # one member is no ensemble
    assert "at least two" in capsys.readouterr().err


def test_lesion_kind_is_the_kind_most_of_its_voxels_carry():
    mask = np.zeros((2, 8, 8), dtype=bool)
    kinds = np.zeros((2, 8, 8), dtype=np.uint8)
    mask[:, 1:3, 1:3] = True  # lesion 1: 8 voxels, 5 dark (2) and 3 cavity (3)
    kinds[:, 1:3, 1:3] = 3
    kinds[0, 1:3, 1:3] = 2
    kinds[1, 1, 1] = 2
    mask[1, 5:8, 5:8] = True  # lesion 2: mirror (5)
    kinds[1, 5:8, 5:8] = 5
    assert _script().lesion_kinds(mask, kinds) == ["dark", "mirror"]
    kinds[1, 5:8, 5:8] = 0  # a lesion without a kind label is "none", not the first kind
    assert _script().lesion_kinds(mask, kinds) == ["dark", "none"]
    assert _script().lesion_kinds(np.zeros((2, 8, 8), bool), kinds) == []
