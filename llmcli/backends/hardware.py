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


# Files an NVIDIA driver creates: the kernel module's version file, the first device node, and
# WSL2's GPU paravirtualisation device (any vendor there: a false positive only costs an import).
NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/dxg")


def nvidia_driver_present(paths=NVIDIA_DRIVER_FILES) -> bool:
    """Whether a CUDA GPU can exist here, without importing torch (≈3 s): a GGUF run on a
    CPU-only machine must not pay for asking torch."""
    return any(os.path.exists(p) for p in paths)


def cuda_gpu_name() -> str | None:
    """The CUDA GPU torch would use (its name), or None; torch is imported only when an NVIDIA
    driver is present."""
    if not nvidia_driver_present():
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)
