"""A real install: the wheel carries the model zoo, the demo, the atlas and the icon as package data, and the
installed ``matchgen`` finds them from a folder outside the source tree (nothing downloaded: the wheel goes into a
fresh venv with ``--no-deps``, which sees the test environment's dependencies through a path file)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app import bundled
from app.nets.zoo import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
#: what must ship (wheel path under app/_bundled/) for the app to work installed
SHIPPED = [
    "models/dae.json",
    "models/dae.safetensors",
    "demo/demo_t1.nii.gz",
    "demo/demo_t1_mask.nii.gz",
    "atlas/mni152_2009a_t1_2mm.nii.gz",
    "atlas/mni152_2009a_brainmask_2mm.nii.gz",
    "icons/matchgen.png",
]
_SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*cache", "*.train.*")


def test_source_tree_resolution_and_overrides(monkeypatch, tmp_path):
    # a checkout: no app/_bundled, so the repository folders beside app/
    assert bundled.installed_dir("models") is None
    for name, (rel, env) in bundled.FOLDERS.items():
        if env:
            monkeypatch.delenv(env, raising=False)
        assert bundled.bundled_dir(name) == ROOT / rel
        assert any((ROOT / rel).iterdir())
        if env:
            monkeypatch.setenv(env, str(tmp_path))
            assert bundled.bundled_dir(name) == tmp_path
            monkeypatch.setenv(env, "")  # an empty variable is no override
            assert bundled.bundled_dir(name) == ROOT / rel
    with pytest.raises(KeyError):
        bundled.bundled_dir("nope")


def test_no_module_computes_a_path_into_the_source_tree():
    # the bundled folders are resolved in app/bundled.py only (parents[N] of a module breaks in site-packages)
    bad = [
        str(f.relative_to(ROOT))
        for f in (ROOT / "app").rglob("*.py")
        if f.name != "bundled.py" and ("parents[" in f.read_text() or '"resources"' in f.read_text())
    ]
    assert not bad, f"paths computed outside app/bundled.py: {bad}"


def _wheel(tmp_path: Path) -> Path:
    # built from a clean copy, so that no stale build/ folder of the checkout can leak into the wheel
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_SKIP)
    out = tmp_path / "wheel"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, src],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("matchgen_viewer-*.whl")
    return whl


def _venv(tmp_path: Path, whl: Path) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], check=True)
    py = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([py, "-c", purelib], text=True).strip())
    # the dependencies (torch, Qt, ...) from this environment; a plain path line, so its .pth files (among them
    # the editable install of this checkout) are not run and cannot shadow the wheel
    (site / "zz-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", whl],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return venv


@pytest.mark.slow
def test_wheel_installs_and_finds_its_data(tmp_path):
    whl = _wheel(tmp_path)
    names = set(zipfile.ZipFile(whl).namelist())
    missing = [p for p in SHIPPED if f"app/_bundled/{p}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    shipped_models = {Path(n).name for n in names if n.startswith("app/_bundled/models/")}
    repo_models = {p.name for p in (ROOT / "models").glob("*") if p.suffix in (".json", ".safetensors")}
    assert shipped_models == {n for n in repo_models if ".train." not in n}  # every card and weights, no resumes
    code = {n for n in names if n.startswith("app/") and n.endswith(".py")}
    tracked = {str(p.relative_to(ROOT)) for p in (ROOT / "app").rglob("*.py")}
    assert tracked <= code, f"modules not in the wheel: {sorted(tracked - code)[:5]}"

    venv = _venv(tmp_path, whl)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHGEN_") and k != "PYTHONPATH"}
    env["MATCHGEN_CACHE"] = str(tmp_path / "cache")

    def run(*argv):
        r = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout

    probe = (
        "import app\n"
        "from app.data.atlas import ATLAS_DIR, load_atlas\n"
        "from app.data.demo import DEMO_DIR\n"
        "from app.gui.app import ICON\n"
        "from app.nets.zoo import MODELS_DIR\n"
        "from app.viewer.loading import demo_paths\n"
        "t1, mask, _ = load_atlas()\n"
        "assert mask.any() and ICON.is_file() and demo_paths()[1] is not None\n"
        "for p in (app.__file__, MODELS_DIR, DEMO_DIR, ATLAS_DIR, ICON): print(p)\n"
    )
    paths = [Path(line) for line in run(venv / "bin" / "python", "-c", probe).split()]
    assert len(paths) == 5
    outside = [p for p in paths if not p.is_relative_to(venv)]
    assert not outside, f"the installed app uses files outside its venv (shadowed by the checkout?): {outside}"
    demo_dir = paths[2]

    listing = run(venv / "bin" / "matchgen", "models")
    assert f"* {DEFAULT_MODEL} " in listing and "vae-grad" in listing  # the default marked, ensemble or not

    # detect on the installed demo study, with the installed default model and atlas (base model, one thread)
    out = cwd / "mask.nii.gz"
    common = ["--base-only", "--threads", "1"]
    run(venv / "bin" / "matchgen", "detect", demo_dir / "demo_t1.nii.gz", "--out", out, *common)
    from app.cli import main

    ref = tmp_path / "ref.nii.gz"
    assert main(["detect", str(ROOT / "resources/demo/demo_t1.nii.gz"), "--out", str(ref), *common]) == 0
    a, b = nib.load(out), nib.load(ref)
    assert np.asarray(a.dataobj).any()
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_array_equal(a.affine, b.affine)


#: import name -> distribution name, where they differ
_DIST = {
    "PIL": "pillow",
    "PySide6": "PySide6-Essentials",
    "sklearn": "scikit-learn",
    "nrrd": "pynrrd",
    "dicomweb_client": "dicomweb-client",
}
#: declared but never imported by name: plug-ins another library loads, or what a dependency needs at run time
_NOT_IMPORTED = {
    "pylibjpeg",  # pydicom's decoders for compressed pixel data
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "bokeh",  # the Dask dashboard
    "dask",  # distributed's core; `python -m dask scheduler` (bench batch)
}
#: imported only by benchmark code, declared as the `bench` extra
_BENCH_ONLY = {"scikit-learn"}


def _third_party_imports() -> dict[str, set[str]]:
    import ast

    std = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    for f in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top not in std and top != "app":
                    found.setdefault(_DIST.get(top, top), set()).add(str(f.relative_to(ROOT / "app")))
    return found


def test_runtime_dependencies_are_what_the_app_imports():
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    extras = {k: {Requirement(r).name.lower() for r in v} for k, v in project["optional-dependencies"].items()}
    used = {k.lower(): v for k, v in _third_party_imports().items()}
    for dist in _BENCH_ONLY:
        assert all(p.startswith("bench/") for p in used.get(dist, ())), f"{dist} is imported outside app/bench"
        assert dist in extras["bench"] and dist not in declared
    missing = set(used) - set(declared) - {d.lower() for d in _BENCH_ONLY}
    assert not missing, f"imported but not declared: {sorted(missing)}"
    unused = set(declared) - set(used) - {d.lower() for d in _NOT_IMPORTED}
    assert not unused, f"declared but never imported (move to an extra, or say why in _NOT_IMPORTED): {unused}"
    for test_tool in ("pytest", "pytest-qt", "ruff", "hypothesis", "pyinstaller"):
        assert test_tool not in declared
    # the pins CI installs (CPU torch 2.13.0 among them, the linter of the dev extra) satisfy the declared ranges
    ranges = dict(declared)
    for reqs in project["optional-dependencies"].values():
        ranges.update({Requirement(r).name.lower(): Requirement(r) for r in reqs if Requirement(r).name.lower()
                       not in declared})  # fmt: skip
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            pin = Requirement(line)
            version = next(iter(pin.specifier)).version
            assert pin.name.lower() in ranges, f"{line} pins a package pyproject does not declare"
            assert ranges[pin.name.lower()].specifier.contains(version), f"{line} is outside pyproject's range"
