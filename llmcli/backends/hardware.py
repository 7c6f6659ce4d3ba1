"""Facts about the machine that backends and dispatch need. Pure where possible."""

from __future__ import annotations

import os
from functools import lru_cache


def parse_physical_cores(cpuinfo: str) -> int | None:
    """Count distinct (physical id, core id) pairs in /proc/cpuinfo text."""
    cores: set[tuple[str, str]] = set()
    phys = core = None
    for line in cpuinfo.splitlines() + [""]:
        if not line.strip():
            if core is not None:
                cores.add((phys or "0", core))
            phys = core = None
            continue
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            core = value.strip()
    return len(cores) or None


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Threads for compute: physical cores (hyper-threads slow matmul-bound loops down)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            n = parse_physical_cores(f.read())
    except OSError:
        n = None
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n or available, available))
