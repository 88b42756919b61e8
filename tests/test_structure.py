"""The layout rules of the design card, checked: core, nets, io and data never import Qt; the code is lint-clean."""

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QT_FREE = ["app.core", "app.nets", "app.io", "app.data", "app.train", "app.bench"]


def _modules(pkg: str) -> list[str]:
    path = ROOT / Path(*pkg.split("."))
    if not path.is_dir():
        return []
    return [pkg] + [f"{pkg}.{m.name}" for m in pkgutil.walk_packages([str(path)])]


@pytest.mark.parametrize("pkg", QT_FREE)
def test_package_imports_no_qt(pkg):
    mods = _modules(pkg)
    if not mods:
        pytest.skip(f"{pkg} does not exist yet")
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('PySide6', 'shiboken6', 'pyqtgraph', 'qasync'))\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"{pkg} pulls in Qt: {r.stdout.strip()}"


def test_console_script_runs():
    exe = Path(sys.executable).parent / "matchgen"
    if not exe.exists():
        exe = shutil.which("matchgen")
    assert exe, "the matchgen console script is not installed (pip install -e .)"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "COMMAND" in r.stdout


def test_lint_clean():
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment")
    r = subprocess.run([str(ruff), "check", "app", "tests", "main.py"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:]
