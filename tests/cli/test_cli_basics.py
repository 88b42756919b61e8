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
