"""Choose and load a backend for a model: one rule, explained in ``-v`` output.

The rule is a pure function of the model's format, the user's explicit
``--backend``/``--device`` and the hardware facts, so it is unit-tested with
the facts injected.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmcli.errors import UsageError

BACKENDS = ("auto", "llama.cpp", "torch")


@dataclass(frozen=True)
class BackendOptions:
    backend: str = "auto"
    device: str | None = None
    dtype: str | None = None
    ctx: int | None = None
    threads: int | None = None
    gpu_layers: int | None = None
    verbose: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False
    compile: bool = False


@dataclass(frozen=True)
class Choice:
    backend: str
    reason: str


def normalize_backend(name: str) -> str:
    aliases = {"llamacpp": "llama.cpp", "llama_cpp": "llama.cpp", "llama-cpp": "llama.cpp", "llama.cpp": "llama.cpp",
               "gguf": "llama.cpp", "torch": "torch", "pytorch": "torch", "transformers": "torch", "auto": "auto"}
    key = name.strip().lower()
    if key not in aliases:
        raise UsageError(f"unknown backend {name!r}", "choose auto, llama.cpp or torch")
    return aliases[key]


def choose(model_format: str, backend: str = "auto", device: str | None = None, *,
           cuda_available: bool = False, torch_installed: bool = True) -> Choice:
    """The dispatch rule (see docs/architecture.md)."""
    backend = normalize_backend(backend)
    if backend == "llama.cpp":
        if model_format != "gguf":
            raise UsageError("the llama.cpp backend needs a GGUF file, and this model is an HF-format folder",
                             "use --backend torch, or pass a .gguf file")
        return Choice("llama.cpp", "--backend llama.cpp was given")
    if backend == "torch":
        return Choice("torch", "--backend torch was given")
    # auto
    if model_format == "gguf":
        if device and device != "cpu" and torch_installed:
            return Choice("torch", f"--device {device} asks for the torch backend")
        return Choice("llama.cpp", "GGUF model: llama.cpp runs quantized weights fastest")
    if cuda_available:
        return Choice("torch", "HF weights and a CUDA GPU")
    return Choice("torch", "HF-format model with no GGUF file: torch on CPU (hint: a GGUF of this model runs faster on CPU)")


def load_backend(ref, opts: BackendOptions):
    """Resolve the rule against the real machine and load the chosen backend."""
    choice = choose(ref.format, opts.backend, opts.device, cuda_available=_cuda_available(ref.format, opts))
    if choice.backend == "llama.cpp":
        from llmcli.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(ref.path, ctx_cap=opts.ctx, threads=opts.threads, gpu_layers=opts.gpu_layers or 0,
                               verbose=opts.verbose, reason=choice.reason)
    try:
        from llmcli.backends.torch import TorchBackend
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("llmcli"):
            raise UsageError("the torch backend is not available in this build") from None
        raise UsageError(f"the torch backend needs {e.name}, which is not installed", "pip install torch transformers") from None
    return TorchBackend(ref, opts, reason=choice.reason)


def _cuda_available(model_format: str, opts: BackendOptions) -> bool:
    # Only HF folders in auto mode care; importing torch costs seconds, so ask only then.
    if model_format == "gguf" or normalize_backend(opts.backend) != "auto":
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
