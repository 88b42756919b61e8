"""Families by name. Built-in families register on import; third-party packages add theirs through the
``matchgen.models`` entry point group, whose value is the model class (a subclass of AnomalyModel)::

    [project.entry-points."matchgen.models"]
    my-ae = "my_package.model:MyAE"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from app.errors import CheckpointError
from app.nets.base import AnomalyModel, ModelConfig

ENTRY_POINT_GROUP = "matchgen.models"

#: modules that define the built-in families (imported on first use of the registry)
BUILTIN_MODULES = (
    "app.nets.autoencoder",
    "app.nets.context_ae",
    "app.nets.vae",
    "app.nets.vae_grad",
    "app.nets.dae",
    "app.nets.ganomaly",
    "app.nets.ddgan",
)

_FAMILIES: dict[str, type[AnomalyModel]] = {}
_loaded = False


def register_family(name: str):
    """Class decorator: make a model class available under ``name``."""

    def deco(cls: type[AnomalyModel]) -> type[AnomalyModel]:
        if not (isinstance(cls, type) and issubclass(cls, AnomalyModel)):
            raise TypeError(f"{cls!r} is not an AnomalyModel subclass")
        cls.family = name
        _FAMILIES[name] = cls
        return cls

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _FAMILIES:
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plug-in must not take the app down
            import warnings

            warnings.warn(f"model plug-in {ep.name!r} failed to load: {exc}", stacklevel=2)
            continue
        if isinstance(cls, type) and issubclass(cls, AnomalyModel):
            register_family(ep.name)(cls)


def available_families() -> list[str]:
    _load_all()
    return sorted(_FAMILIES)


def get_family(name: str) -> type[AnomalyModel]:
    _load_all()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise CheckpointError(
            f"unknown model family {name!r}; known families: {', '.join(sorted(_FAMILIES)) or 'none'}"
        ) from None


def create_model(config: ModelConfig) -> AnomalyModel:
    return get_family(config.family)(config)
