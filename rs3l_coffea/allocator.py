"""Keep freed memory in the process for reuse (glibc ``mallopt``), for array-heavy loops.

A generation worker allocates and frees tens of MB of numpy temporaries per batch (the
``nextBatch`` records, pruned columns, detector candidates, uproot's write buffers). With
glibc's defaults much of it goes back to the kernel between batches, and every new batch
page-faults it in afresh: measured on this project's machine, writing a 2,000-event file
spent 60-80 ms of system time on ~27,000 minor page faults, doubling the write stage.
Serving allocations up to 32 MB from the heap and trimming the heap only above 1 GB of free
memory removes most of them, at the cost of the process keeping its peak memory.

Set ``RS3L_MALLOC_TUNING=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for this parameter on 64-bit systems
TRIM_THRESHOLD = 1 << 30

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Apply the settings once per process; True if glibc accepted them.

    Does nothing (False) off Linux/glibc or when ``RS3L_MALLOC_TUNING=0``. Only affects how
    memory is reused, never what is computed.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("RS3L_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library symbols, or not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
    return _applied
