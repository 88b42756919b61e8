"""Device choice in one place: ``auto`` picks CUDA, then Apple MPS, then the CPU; and whether a device computes
bfloat16 in hardware (:func:`search_precision`: the solver's bfloat16 search steps only where they are fast)."""

from __future__ import annotations

import torch

from app.errors import OptionError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn a user's device choice into a ``torch.device``, failing clearly if it is unavailable."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise OptionError("--device cuda was asked for, but this torch build sees no CUDA GPU")
        return torch.device(name)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise OptionError("--device mps was asked for, but Apple MPS is not available")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise OptionError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def describe_device(device: torch.device) -> str:
    """A short human-readable name for status bars and reports."""
    if device.type == "cuda":
        return f"GPU ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "GPU (Apple MPS)"
    return f"CPU ({torch.get_num_threads()} threads)"


#: torch's CPU feature checks for bfloat16 arithmetic in hardware (AVX-512 BF16, Intel AMX)
_CPU_BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with AVX-512 BF16 or
    AMX. Elsewhere (AVX2-only and plain AVX-512 CPUs, most desktops and laptops; Apple MPS) torch emulates it, and a
    bfloat16 convolution costs many times a float32 one (measured: docs/benchmarks.md, "CPUs without bfloat16")."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in _CPU_BF16_CHECKS)
    return False


def search_precision(precision: str, device: torch.device | str) -> tuple[str, str | None]:
    """The precision the solver's search steps run in on ``device``: ``precision`` as asked, except bfloat16 on a
    device without it in hardware, which runs float32 (the paper's precision: the same method, finer rounding, and
    there the faster). Returns (precision, a one-line note when it differs from the one asked for, else None)."""
    if precision != "bf16" or native_bf16(device):
        return precision, None
    dev = torch.device(device)
    what = "this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX)" if dev.type == "cpu" else (
        f"{dev.type} has no bfloat16 arithmetic")  # fmt: skip
    return "fp32", (
        f"float32 search steps instead of the card's bfloat16: {what}, and emulated bfloat16 is many times "
        "slower; the maps differ by rounding only"
    )
