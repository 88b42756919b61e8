"""``app.allocator``: freed arrays of a detection's size are reused instead of being faulted in again."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: arrays of 2-30 MB (the sizes of a batch's activations and codes) made and freed in a shuffled order twenty times,
#: in the main thread or in another one (where a Dask worker runs its tasks); prints the page faults
PROBE = """
import resource, sys, threading
sys.path.insert(0, {root!r})
import numpy as np
if {keep}:
    from app.allocator import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()  # set once, then a no-op that still says so
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def work():
    rng = np.random.default_rng(0)
    for it in range(22):
        if it == 2:
            f0 = faults()
        a = [np.ones(mb * 2**20 // 8) for mb in (16, 8, 24, 4, 12, 30, 2, 16)]
        for i in rng.permutation(len(a)):
            a[i] = None
    print(faults() - f0)
if {thread}:
    t = threading.Thread(target=work)
    t.start()
    t.join()
else:
    work()
"""


def _faults(keep: bool, thread: bool = False) -> int:
    code = PROBE.format(root=str(ROOT), keep=keep, thread=thread)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.strip())


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
@pytest.mark.parametrize("thread", [False, True], ids=["main thread", "another thread"])
def test_freed_arrays_are_reused_not_faulted_in_again(thread):
    plain, kept = _faults(False, thread), _faults(True, thread)
    # 20 rounds of 112 MB: glibc's own thresholds (and, in another thread, its thread arena's 64 MB heaps) return
    # most of it to the system each round (tens of thousands of page faults); kept, the heap serves every round
    # from the first one's pages
    assert plain > 10_000, plain
    assert kept < plain // 20, (kept, plain)


def test_elsewhere_it_does_nothing(monkeypatch):
    import app.allocator as allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator._set() is False
