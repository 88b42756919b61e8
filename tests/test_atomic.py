"""The one atomic-write helper (app.atomic) and every writer that uses it: the umask's permissions (not
mkstemp's 0600), the old file intact and no temporary left after a failure, exact error messages."""

import json
import os
import stat

import numpy as np
import pytest
import torch

from app.atomic import atomic_output, atomic_write_text, current_umask
from app.errors import MatchGenError, OutputError


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _writers(tmp_path, tiny_ae):
    """(name, write) for every kind of output the project writes; each returns the paths it wrote."""
    from app.data.splits import save_split
    from app.io.study import make_study
    from app.nets.checkpoint import save_checkpoint
    from app.train.state import save_train_state

    def checkpoint():
        stem = save_checkpoint(tiny_ae, tmp_path / "ck" / "m", {"chosen": {"eps": 0.1, "tau": 0.2}})
        return [stem.with_suffix(".safetensors"), stem.with_suffix(".json")]

    def train_state():
        opt = torch.optim.Adam(tiny_ae.parameters())
        save_train_state(tmp_path / "m.state.safetensors", {"opt": opt}, {"epoch": 1})
        return [tmp_path / "m.state.safetensors"]

    def mask_and_map():
        from app.io import save_mask, save_on_study_grid

        study = make_study(np.arange(60, dtype=np.float32).reshape(4, 5, 3), np.eye(4), "MR", "test")
        save_mask(study, np.ones((4, 5, 3), bool), tmp_path / "mask.nii.gz")
        save_on_study_grid(study, np.ones((4, 5, 3), np.float32), tmp_path / "map.nii")
        return [tmp_path / "mask.nii.gz", tmp_path / "map.nii"]

    def slice_set():
        save_split(tmp_path / "ds", "val", np.zeros((2, 1, 8, 8), np.float32), np.zeros((2, 8, 8), bool), ["a", "b"])
        return sorted((tmp_path / "ds" / "val").iterdir())

    def speed_report():
        from app.bench.speed import write_outputs

        res = {"model": "m", "model_family": "ae-l1", "device_name": "cpu", "torch": "x", "threads": 1,
               "cpu_count": 1, "loadavg_before": [0], "loadavg_after": [0], "slices": "s", "eps": 0.1,
               "eps_rule": "r", "tau": 0.2, "solver_fast": {"method": "spg", "precision": "bf16"},
               "same_loss_rtol": 1e-3}  # fmt: skip
        return list(write_outputs(res, tmp_path / "speed"))

    def figure_file():
        with atomic_output(tmp_path / "fig.png") as tmp:
            open(tmp, "wb").write(b"\x89PNG")
        return [tmp_path / "fig.png"]

    return [checkpoint, train_state, mask_and_map, slice_set, speed_report, figure_file]


def test_every_writer_gives_the_umask_permissions_and_leaves_no_temporaries(tmp_path, tiny_ae, umask):
    assert current_umask() == umask
    for write in _writers(tmp_path, tiny_ae):
        paths = write()
        assert paths, write.__name__
        for p in paths:
            assert _mode(p) == 0o666 & ~umask, (write.__name__, p.name, oct(_mode(p)))
    left = [p for p in tmp_path.rglob(".*") if p.is_file()]
    assert not left, left


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old\n")

    def boom(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk on fire")

    from app.atomic import atomic_write

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, boom)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_error_messages_say_what_went_wrong(tmp_path, monkeypatch):
    with pytest.raises(OutputError, match=r"folder .*nowhere does not exist"):
        with atomic_output(tmp_path / "nowhere" / "x.png"):
            pass
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        atomic_write_text(tmp_path / "d", "x")

    def denied(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(OutputError, match=r"cannot write .*out\.txt: permission denied"):
        atomic_write_text(tmp_path / "out.txt", "x")
    assert not list(tmp_path.glob(".out.txt.*"))
    assert issubclass(OutputError, MatchGenError)  # the CLI prints it as one line, exit code 2


def test_save_checkpoint_never_leaves_weights_without_a_valid_card(tmp_path, tiny_ae):
    from app.errors import CheckpointError
    from app.nets.checkpoint import save_checkpoint

    with pytest.raises(CheckpointError, match="chosen.tau"):
        save_checkpoint(tiny_ae, tmp_path / "m", {"chosen": {"tau": "high"}})
    assert not (tmp_path / "m.json").exists()
    card = json.loads((save_checkpoint(tiny_ae, tmp_path / "m").with_suffix(".json")).read_text())
    assert card["card_version"] == 2
