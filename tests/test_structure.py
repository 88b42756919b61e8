"""The layout rules of the design card, checked: core, nets, io and data never import Qt; the import arrows run one
way (io -> data -> nets -> core -> viewer -> figure -> gui; train, bench and cli on top); no two public classes share
a name; the code is lint-clean."""

import ast
import collections
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QT_FREE = ["app.core", "app.nets", "app.io", "app.data", "app.train", "app.bench", "app.batch", "app.pacs"]


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


#: the bottom modules every package may use (plain data and helpers; they import nothing but app.errors)
BOTTOM = {"errors", "atomic", "foreground", "solver_options", "bundled", "filehash", "allocator"}
#: which app packages each package may import (besides BOTTOM and itself), lazy imports inside functions included
ALLOWED = {
    "io": set(),
    "data": {"io"},
    "nets": set(),  # models know nothing of the solver or the pipeline: model cards name solvers as plain options
    "core": {"nets"},  # the solver, maps, metrics, the detection pipeline and the evaluation protocol
    "train": {"io", "data", "nets", "core"},  # not bench: the protocol that calibration shares lives in core
    "pacs": {"io"},  # PACS clients, server settings and the retrieval cache (no Qt)
    "viewer": {"io", "data", "nets", "core"},
    "figure": {"io", "data", "nets", "core", "viewer"},
    "gui": {"io", "data", "nets", "core", "viewer", "figure", "pacs"},
    "batch": {"io", "data", "nets", "core", "viewer"},  # batch detection on Dask: the pipeline, no GUI
    "bench": {"io", "data", "nets", "core", "train", "viewer", "figure", "gui", "batch", "pacs"},
    "cli": {"io", "data", "nets", "core", "train", "viewer", "figure", "gui", "bench", "batch", "pacs"},
}


def _app_imports() -> dict[str, dict[str, set[str]]]:
    """package -> module file -> app packages it imports (every import statement, top level or not)."""
    out: dict[str, dict[str, set[str]]] = collections.defaultdict(dict)
    for f in sorted((ROOT / "app").rglob("*.py")):
        rel = f.relative_to(ROOT / "app")
        pkg = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        found = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            found |= {n.split(".")[1] for n in names if n.startswith("app.") and n.count(".") >= 1}
        out[pkg][str(rel)] = found - {pkg}
    return out


def test_import_arrows_run_one_way():
    imports = _app_imports()
    assert set(imports) <= set(ALLOWED) | BOTTOM | {"__init__"}, f"a new package needs a rule: {sorted(imports)}"
    bad = []
    for pkg, files in imports.items():
        allowed = BOTTOM | ALLOWED.get(pkg, set()) if pkg not in BOTTOM else {"errors"}
        for path, used in files.items():
            bad += [f"{path} imports app.{u}" for u in sorted(used - allowed)]
    assert not bad, "imports against the arrows:\n" + "\n".join(bad)


def test_the_arrow_check_bites():
    # the rule table is not vacuous: the two cycles this layout removed would be caught
    assert "core" not in ALLOWED["nets"] and "bench" not in ALLOWED["train"]
    assert "gui" not in ALLOWED["viewer"] and "viewer" not in ALLOWED["core"]


def test_gui_package_ships_no_test_or_benchmark_code():
    gui = {p.stem for p in (ROOT / "app" / "gui").glob("*.py")}
    assert not gui & {"probe", "gui_probe", "latency"}, "measuring code belongs to app.bench or tests"


def test_no_two_public_classes_share_a_name():
    where = collections.defaultdict(list)
    for f in sorted((ROOT / "app").rglob("*.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(str(f.relative_to(ROOT)))
    dup = {k: v for k, v in where.items() if len(v) > 1}
    assert not dup, f"classes defined twice: {dup}"
