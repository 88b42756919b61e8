"""Build configuration pyproject.toml cannot express: the files that ship with the app (the model zoo in models/,
the demo, the atlas and the icons in resources/) stay where they are in the repository, and the wheel carries
them as package data inside the package, ``app/_bundled/NAME/``, where :mod:`app.bundled` finds them with
importlib.resources. Everything else (metadata, dependencies, entry points) is in pyproject.toml."""

from setuptools import find_packages, setup

#: installed package -> repository folder (the same folders as app.bundled.FOLDERS; tests/test_install.py checks)
BUNDLED = {
    "app._bundled.models": "models",
    "app._bundled.demo": "resources/demo",
    "app._bundled.atlas": "resources/atlas",
    "app._bundled.icons": "resources/icons",
}

setup(
    packages=find_packages(include=["app", "app.*"]) + list(BUNDLED),
    package_dir=BUNDLED,
    package_data={
        "app._bundled.models": ["*.json", "*.safetensors"],  # each model's card and weights
        "app._bundled.demo": ["*.nii.gz", "ATTRIBUTION.md"],
        "app._bundled.atlas": ["*.nii.gz", "ATTRIBUTION.md"],
        "app._bundled.icons": ["*.png", "*.svg"],
    },
    # training-resume states (models/NAME.train.safetensors, git-ignored) never ship
    exclude_package_data={"app._bundled.models": ["*.train.safetensors"]},
)
