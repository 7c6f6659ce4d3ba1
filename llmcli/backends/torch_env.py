"""Devices and dtypes for the torch backend: pure parsing/resolution rules (unit-tested with
injected facts) and the one function that asks torch about the machine."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from llmcli.errors import BackendError, UsageError
from llmcli.params import PARAMS

def parse_dtype(name: str | None) -> str | None:
    """--dtype value -> canonical torch dtype name, or None for auto (the parameter table's rule)."""
    return None if name is None else PARAMS["dtype"].parse(name, "--dtype")


def parse_device(name: str | None) -> str | None:
    """--device value -> "cpu" | "cuda" | "cuda:N" | "mps", or None for auto (the parameter table's rule)."""
    return None if name is None else PARAMS["device"].parse(name, "--device")


@dataclass(frozen=True)
class TorchFacts:
    cuda_count: int = 0
    cuda_bf16: bool = False  # compute capability >= 8.0 (Ampere and later)
    mps: bool = False
    cuda_name: str = ""
    torch_version: str = ""


def torch_facts() -> TorchFacts:
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    bf16 = False
    name = ""
    if n:
        bf16 = bool(torch.cuda.is_bf16_supported())
        name = torch.cuda.get_device_name(0)
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return TorchFacts(n, bf16, mps, name, torch.__version__)


def resolve_device(requested: str | None, facts: TorchFacts) -> tuple[str, str]:
    """(device, why). Auto: cuda → mps → cpu. An explicit device that is not there is an error."""
    if requested is None:
        if facts.cuda_count:
            return "cuda:0", f"CUDA GPU found ({facts.cuda_name or 'cuda:0'})"
        if facts.mps:
            return "mps", "Apple GPU (MPS) found"
        return "cpu", "no CUDA or MPS GPU found"
    if requested.startswith("cuda"):
        if not facts.cuda_count:
            raise BackendError(f"--device {requested} was given but no CUDA GPU is available "
                               f"(torch {facts.torch_version or '?'})",
                               "use --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= facts.cuda_count:
            raise BackendError(f"--device {requested} was given but only {facts.cuda_count} CUDA device(s) exist",
                               f"use cuda:0 … cuda:{facts.cuda_count - 1}")
        return f"cuda:{index}", f"--device {requested} was given"
    if requested == "mps" and not facts.mps:
        raise BackendError("--device mps was given but the Apple MPS backend is not available",
                           "use --device cpu")
    return requested, f"--device {requested} was given"


def resolve_dtype(requested: str | None, device: str, facts: TorchFacts) -> tuple[str, str]:
    """(dtype name, why). Auto: bf16 on GPUs that support it, fp16 on older GPUs and MPS, fp32 on CPU."""
    if requested is not None:
        if requested == "bfloat16" and device.startswith("cuda") and not facts.cuda_bf16:
            raise UsageError("--dtype bfloat16 is not supported by this GPU", "use --dtype float16")
        return requested, "--dtype given"
    if device.startswith("cuda"):
        return ("bfloat16", "GPU supports bf16") if facts.cuda_bf16 else ("float16", "GPU without bf16")
    if device == "mps":
        return "float16", "MPS"
    return "float32", "CPU (bf16/fp16 matmuls are slower than fp32 on most CPUs)"


@contextlib.contextmanager
def quiet_transformers(enabled: bool = True):
    """Silence transformers' info logs and progress bars (they would land on stderr)."""
    if not enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()

