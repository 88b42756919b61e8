import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_usage_error_is_one_line_exit_2():
    r = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "no-such-command"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_user_error_is_one_line_exit_2(capsys, tmp_path):
    assert main(["models", "--dir", str(tmp_path)]) == 0
    (tmp_path / "x.json").write_text("{broken")
    (tmp_path / "x.safetensors").write_bytes(b"")
    assert main(["models", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid JSON" in err[0]


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'matchgen = "app.cli:main"' in text


def test_python_warnings_are_one_line_on_stderr(tmp_path):
    # a real warnings.warn through the real command line: a model plug-in whose entry point cannot be imported
    # (app.nets.registry warns and goes on); the command then fails on its own bad option, as usual
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[matchgen.models]\nbroken = no_such_module_xyz:Model\n")
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", "nofamily", "--data", str(tmp_path), "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines == [
        "warning: model plug-in 'broken' failed to load: No module named 'no_such_module_xyz'",
        "matchgen train: error: unknown model family 'nofamily'; known families: "
        + lines[1].split("known families: ")[1],
    ], r.stderr
    assert "UserWarning" not in r.stderr and ".py:" not in r.stderr


def test_runtime_warning_of_a_command_is_one_line(monkeypatch, capsys):
    import warnings

    import app.cli.models as models_cmd

    def run(args):
        warnings.warn("MatchGen: the decoder returned NaN\n  for 2 of 8 images", RuntimeWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(models_cmd, "run", run)
    assert main(["models"]) == 0
    assert capsys.readouterr().err == "warning: MatchGen: the decoder returned NaN for 2 of 8 images\n"
    assert warnings.showwarning is not None and warnings.showwarning.__name__ == "showwarning"  # restored


def test_closed_stdout_pipe_is_no_traceback():
    # `matchgen models | head -1`: the reader is gone before the command writes (here: before it even starts)
    p = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err


def test_models_lists_what_detect_applies_and_the_triage_state(tmp_path, capsys, monkeypatch):
    import json

    import torch

    from app.batch.task import file_sha256
    from app.core.triage_evidence import Operator, record_measurement, triage_measurement
    from app.nets import ModelConfig, create_model
    from app.nets.checkpoint import save_checkpoint

    torch.manual_seed(0)
    m = create_model(ModelConfig("ae-l1", image_size=16, latent_dim=4, width=4)).freeze()
    card = {
        "chosen": {"eps": 0.5, "tau": 0.3, "tau_base": 0.35},  # per image
        "chosen_volume": {"eps": 0.25, "tau": 0.2, "tau_base": 0.3},  # what detect applies
    }
    stem = save_checkpoint(m, tmp_path / "a", card)
    save_checkpoint(m, tmp_path / "b", card)
    raw = json.loads(stem.with_suffix(".json").read_text())
    meas = triage_measurement(
        raw, file_sha256(stem.with_suffix(".safetensors")), Operator("mg", 0.25, 0.2), split="test", auroc=0.53,
        ci95=[0.36, 0.70], n_normal=24, n_abnormal=24, loads=[1, 3, 8], seed=3, measured="2026-12-05",
    )  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(record_measurement(raw, meas)))
    assert main(["models", "--dir", str(tmp_path)]) == 0
    a, b = capsys.readouterr().out.splitlines()
    assert "eps=0.25 tau=0.2 triage=not-validated (AUROC 0.53 [0.36-0.70], 48 test studies)" in a
    assert b.endswith("eps=0.25 tau=0.2 triage=none")
    # a card whose screening choice is the base map: its base measurement speaks for a default batch
    base = triage_measurement(
        raw, file_sha256(stem.with_suffix(".safetensors")), Operator("base", 0.0, 0.3), split="head-test",
        auroc=0.82, ci95=[0.69, 0.93], n_normal=24, n_abnormal=24, loads=[1, 3, 8], seed=13, measured="2026-12-06",
    )  # fmt: skip
    both = record_measurement(record_measurement(raw, meas), base)
    stem.with_suffix(".json").write_text(json.dumps({**both, "screening": {"mode": "base"}}))
    assert main(["models", "--dir", str(tmp_path)]) == 0
    a = capsys.readouterr().out.splitlines()[0]
    assert a.endswith("batch=base triage=validated (AUROC 0.82 [0.69-0.93], 48 head-test studies)")
    stem.with_suffix(".json").write_text(json.dumps(record_measurement(raw, meas)))
    # an ensemble card beside them is listed apart, with its members and the tau detect applies
    ens = {
        "family": "ensemble",
        "members": [{"model": "a"}, {"model": "b"}],
        "eps_range": {"eps_min": 0.0, "eps_max": 1.0},
        "chosen_volume": {"eps": 1.0, "tau": 0.03, "tau_base": 0.05},
    }
    (tmp_path / "a+b.json").write_text(json.dumps(ens))
    assert main(["models", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].split()[:3] == ["a+b", "family=ensemble", "members=a+b"]
    assert "eps=x1 (each member's own) tau=0.03 triage=none" in lines[2]  # its members a and b are there
    monkeypatch.setattr("app.nets.zoo.DEFAULT_MODEL", "a+b")  # an ensemble as the default is marked like a model
    assert main(["models", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("* a+b ") and not any(ln.startswith("*") for ln in lines[:2])
    ens["members"][1]["model"] = "gone"
    (tmp_path / "a+b.json").write_text(json.dumps(ens))
    assert main(["models", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[2].endswith("triage=? (a member is missing)")
    ens["members"] = [{"model": "a", "eps": 0.25}, {"model": "b", "eps": 0}]  # b runs as its base model
    (tmp_path / "a+b.json").write_text(json.dumps(ens))
    assert main(["models", "--dir", str(tmp_path)]) == 0
    assert "members=a+b(base)" in capsys.readouterr().out.splitlines()[2].split()
