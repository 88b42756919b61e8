"""Base models (no Qt): one module per family behind :class:`app.nets.base.AnomalyModel`, a registry by family
name (third parties register through the ``matchgen.models`` entry point group) and safetensors checkpoints."""

from app.nets.base import AnomalyModel, ModelConfig
from app.nets.registry import available_families, create_model, get_family, register_family

__all__ = ["AnomalyModel", "ModelConfig", "available_families", "create_model", "get_family", "register_family"]
