"""How much memory this machine can give, and refusing what would not fit before allocating it.

Used by the data loaders (a file header that claims more than the machine has is refused before
anything is allocated) and by the training memory guard (cnnc/train/memory.py).
"""

from __future__ import annotations

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
