"""How much memory this machine can give, and refusing what would not fit before allocating it.

Used by the data loaders (a file header that claims more than the machine has is refused before
anything is allocated) and by the training memory guard (cnnc/train/memory.py); and
`keep_freed_memory`, the C library setting `cnnc train` makes for both backends.
"""

from __future__ import annotations

import ctypes
import os


def available_bytes() -> int | None:
    """Memory a new allocation can get now: MemAvailable, capped by a cgroup limit; None when
    unknown."""
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit, encoding="ascii") as f:
                cap = f.read().strip()
            with open(usage, encoding="ascii") as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 1 << 60:
            found.append(max(int(cap) - used, 0))
        break
    return min(found) if found else None


def human_bytes(n: float) -> str:
    for div, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{int(n)} B"


def data_limit() -> int:
    """The most bytes a data file may claim: what the machine has (at least 64 MiB, so a small
    file is never refused for want of a figure), or 4 GiB when that is unknown."""
    avail = available_bytes()
    return max(avail, 64 << 20) if avail is not None else 4 << 30


def keep_freed_memory() -> bool:
    """Ask the C library's malloc to keep freed memory for reuse (glibc only; process-wide).

    A training step allocates and frees the same large arrays every time. By default glibc
    hands big blocks back to the operating system (munmap, heap trimming), and the next step
    pays again for the kernel to map and zero every page. On a small VM we measured this at
    about a third of a NumPy training step of the benchmark model. Raising glibc's mmap and trim
    thresholds keeps those blocks inside the process (resident memory stays at its peak).
    Returns False, changing nothing, where mallopt is unavailable (macOS, Windows).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # constants from glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))
