"""``app.allocator``: freed arrays of a detection's size are reused instead of being faulted in again."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: five arrays of 20 MB (the size of a batch's activations) made and freed twenty times; prints the page faults
PROBE = """
import resource, sys
sys.path.insert(0, {root!r})
import numpy as np
if {keep}:
    from app.allocator import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()  # set once, then a no-op that still says so
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    a = [np.ones(5 * 2**20 // 2) for _ in range(5)]
    del a
f0 = faults()
for _ in range(20):
    a = [np.ones(5 * 2**20 // 2) for _ in range(5)]
    del a
print(faults() - f0)
"""


def _faults(keep: bool) -> int:
    code = PROBE.format(root=str(ROOT), keep=keep)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.strip())


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
def test_freed_arrays_are_reused_not_faulted_in_again():
    plain, kept = _faults(False), _faults(True)
    # 20 rounds of 100 MB: glibc's own thresholds return most of it to the system each round (tens of thousands
    # of page faults); kept, the heap serves every round from the first one's pages
    assert plain > 10_000, plain
    assert kept < plain // 20, (kept, plain)


def test_elsewhere_it_does_nothing(monkeypatch):
    import app.allocator as allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator._set() is False
