"""The C allocator's thresholds for the large, short-lived arrays of a detection (glibc on Linux).

A detection allocates and frees arrays of megabytes many times per study: torch's activations of a batch of
slices (16 x 16 x 128 x 128 float32 is 16 MB), the dae's latent codes (32 MB per batch), scipy's filtered
volumes. glibc serves a block above its mmap threshold with a fresh mapping and returns it to the system when it
is freed, so every such array is faulted in page by page again: on this project's 2-core machine a screening
batch of 48 whole-head studies spent 185 of its 410 CPU seconds in the kernel (92 million page faults). With the
threshold at its ceiling (32 MB) and the heap kept instead of trimmed, the freed blocks are reused. A Dask worker
runs its tasks in a thread of its own, and glibc gives such a thread an arena of 64 MB heaps that cannot hold a
batch's arrays for reuse, so every thread is sent to the main arena (one arena: ``batch`` runs one task per worker
process, and torch's own threads allocate little). Together the same batch ran twice as fast (11.4 against 23.5
studies per minute) with identical outputs (docs/batch.md). Memory then stays at the process's peak instead of
falling back between studies, which is bounded by one study's work.

:func:`keep_freed_memory` sets the three with ``mallopt`` once per process; elsewhere (another C library, another
system) it does nothing. ``batch``'s workers call it when they load their model. ``detect`` and the viewer do not:
in one process with two torch threads no clear gain was measured, without and then with the setting (``bench
speed``: 0.236 and 0.243 s per slice of a volume, back to back; a volume solved in another thread, as the viewer's
is: 0.238 and 0.253 without, 0.202 and 0.247 with), for 150-250 MB more peak memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: blocks up to this size come from the heap (glibc refuses more: half its 64 MB heap size on 64-bit systems)
MMAP_THRESHOLD = 32 * 2**20
#: free memory at the top of the heap kept for reuse up to this size instead of being returned to the system
TRIM_THRESHOLD = 1 * 2**30

_lock = threading.Lock()
_state: dict[str, bool | None] = {"set": None}


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`) and one arena for all
    threads, for this process, once. True when they are set (now or before); False where the C library is not glibc
    or refuses them."""
    with _lock:
        if _state["set"] is None:
            _state["set"] = _set()
        return bool(_state["set"])


def _set() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1))
    return all(mallopt(param, value) == 1 for param, value in settings)
