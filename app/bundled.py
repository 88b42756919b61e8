"""Where the files that ship with the app are, resolved here and nowhere else: the model zoo (``models/``), the
demo study (``resources/demo/``), the brain atlas (``resources/atlas/``) and the icons (``resources/icons/``).

The repository keeps them at the top level. An installed wheel and the PyInstaller bundle carry them as package
data inside the package, under ``app/_bundled/NAME/`` (``setup.py`` maps the repository folders there; the spec in
``packaging/`` does the same), found with :mod:`importlib.resources`. So, in order:

1. the folder named by the environment variable (``MATCHGEN_MODELS``, ``MATCHGEN_DEMO``, ``MATCHGEN_ATLAS``),
2. the package data of an installed wheel or of the bundle (``app/_bundled/NAME``),
3. the repository folder beside ``app/`` (a source checkout, run as ``python main.py`` or installed editable).

Like :mod:`app.errors` it sits at the bottom of the import arrows and imports no Qt: every package may name it.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

#: name -> (repository folder relative to the root, environment variable that overrides it or None)
FOLDERS: dict[str, tuple[str, str | None]] = {
    "models": ("models", "MATCHGEN_MODELS"),
    "demo": ("resources/demo", "MATCHGEN_DEMO"),
    "atlas": ("resources/atlas", "MATCHGEN_ATLAS"),
    "icons": ("resources/icons", None),
}
#: the folder inside the installed package that holds one sub-folder per entry of FOLDERS
PACKAGE_FOLDER = "_bundled"


def installed_dir(name: str) -> Path | None:
    """The package-data folder of an installed wheel or bundle, or None in a source checkout."""
    d = resources.files("app").joinpath(PACKAGE_FOLDER, name)
    return Path(str(d)) if d.is_dir() else None


def source_dir(name: str) -> Path:
    """The folder in the repository (``models/``, ``resources/...``) beside the ``app`` package."""
    return Path(__file__).resolve().parent.parent / FOLDERS[name][0]


def bundled_dir(name: str) -> Path:
    """The folder of ``name`` (a key of :data:`FOLDERS`): environment override, installed data, source tree."""
    if name not in FOLDERS:
        raise KeyError(f"no bundled folder {name!r} (known: {', '.join(FOLDERS)})")
    env = FOLDERS[name][1]
    if env and os.environ.get(env):
        return Path(os.environ[env])
    return installed_dir(name) or source_dir(name)
