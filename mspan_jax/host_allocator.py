"""glibc's malloc told to keep the train step's freed host memory, so that a CPU step does not map
and fault in its ~1 GB of XLA temporaries afresh on every call.

XLA:CPU allocates one buffer for a program's temporaries per call (MSPAN x4, batch 16 of 48x48:
1.06 GB) and frees it on return. glibc serves any block above 32 MB with its own `mmap` and returns
it with `munmap`, and a thread outside the main arena does so at any size its 64 MB heaps cannot
hold, whatever `MALLOC_MMAP_MAX_` says. So every step the kernel mapped and zeroed each 4 KiB page
again: ~260k page faults and ~1 s of system time per step on a 2-core CPU (docs/performance.md).
With one arena, no mmap'd blocks and no trimming, the buffer is carved from the heap once and reused.
The cost: the process keeps its peak heap until it exits, which a training run reaches anyway.

It must run before JAX creates its threads (before its first computation): a thread keeps the arena it
first allocated from. Set `MSPAN_KEEP_FREED_MEMORY=0` to leave malloc as it is (to measure the
difference, or on a machine where a shared heap's lock costs more than the faults).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

OPT_OUT_ENV = "MSPAN_KEEP_FREED_MEMORY"

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# mallopt takes an int and glibc stores the threshold as a size_t: -1 becomes SIZE_MAX, "never".
_NEVER_TRIM = -1


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to one arena, no mmap'd blocks and no trimming, unless opted out by
    `MSPAN_KEEP_FREED_MEMORY=0`; True when all three settings took effect. False, changing nothing,
    where the C library is not glibc (macOS, musl) or mallopt refuses."""
    if os.environ.get(OPT_OUT_ENV, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    mallopt = ctypes.CDLL(name).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return all(mallopt(param, value) == 1 for param, value in settings)
