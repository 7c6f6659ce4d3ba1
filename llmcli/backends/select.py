"""Choose and load a backend for a model: one rule, explained in ``-v`` output.

The rule is a pure function of the model's format, the user's explicit
``--backend``/``--device``/``--gpu-layers`` and the hardware facts, so it is unit-tested
with the facts injected. The rule (``--backend auto``):

1. HF-format folder → torch (llama.cpp cannot read it): on the CUDA GPU when there is one,
   else Apple MPS, else CPU — with a hint that a GGUF runs faster on CPU.
2. GGUF → llama.cpp, which runs quantized weights fastest on CPU; when llama-cpp-python was
   built with GPU support, layers are offloaded to the GPU (all of them unless
   ``--gpu-layers`` says otherwise; ``--device cpu`` keeps everything on the CPU).
3. GGUF with ``--device cuda|mps`` and a llama.cpp without GPU support → torch on that
   device (the GGUF is dequantized; the conversion is cached).

An explicit ``--backend`` or ``--device`` that cannot be honoured is an error, never a
silent fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmcli.errors import UsageError

ALL_LAYERS = -1
ADAPTER_GGUF = "adapter.gguf"  # an adapter folder's GGUF LoRA (llmcli finetune writes it)


@dataclass(frozen=True)
class BackendOptions:
    """Typed, range-checked values (the parameter table parsed them): backend is "auto", "llama.cpp"
    or "torch", device None (auto), "cpu", "cuda", "cuda:N" or "mps", dtype None (auto) or a torch
    dtype name."""

    backend: str = "auto"
    device: str | None = None
    dtype: str | None = None
    ctx: int | None = None
    threads: int | None = None
    gpu_layers: int | None = None
    verbose: bool = False
    library_logs: bool = False  # llama.cpp / transformers logging (LLMCLI_DEBUG=1): thousands of lines
    allow_pickle: bool = False
    trust_remote_code: bool = False
    compile: bool = False
    api_key: str | None = field(default=None, repr=False)  # remote: --api-key (env vars are read at load)


@dataclass(frozen=True)
class Choice:
    backend: str
    reason: str
    gpu_layers: int = 0  # llama.cpp only; -1 = all layers


_NO_GPU_BUILD = ("llama-cpp-python here was built without GPU support",
                 "reinstall it with CMAKE_ARGS=\"-DGGML_CUDA=on\", or use --backend torch")


def choose(model_format: str, backend: str = "auto", device: str | None = None, *,
           cuda_available: bool = False, mps_available: bool = False, gpu_offload: bool = False,
           gpu_layers: int | None = None) -> Choice:
    """The dispatch rule (module docstring). ``backend``, ``device`` and ``gpu_layers`` are the
    parameter table's canonical values (llmcli.params), already range-checked. Facts:
    ``cuda_available``/``mps_available`` (torch sees that GPU), ``gpu_offload`` (llama-cpp-python
    was built with GPU support)."""
    if model_format == "remote" or backend == "remote":
        return _choose_remote(model_format, backend, device, gpu_layers)
    on_gpu = device is not None and device != "cpu"
    wants_layers = gpu_layers not in (None, 0)

    if backend == "torch" or (backend == "auto" and model_format != "gguf"):
        if wants_layers:
            raise UsageError("--gpu-layers applies to the llama.cpp backend only",
                             "use --device to place a torch model")
        if backend == "torch":
            return Choice("torch", "--backend torch was given")
        if device is not None:
            return Choice("torch", f"HF-format model: torch on --device {device}")
        if cuda_available:
            return Choice("torch", "HF-format model and a CUDA GPU: torch on the GPU")
        if mps_available:
            return Choice("torch", "HF-format model and an Apple GPU: torch on MPS")
        return Choice("torch", "HF-format model with no GGUF file: torch on CPU (hint: a GGUF of this model "
                               "runs faster on CPU with llama.cpp)")

    if backend == "llama.cpp" and model_format != "gguf":
        raise UsageError("the llama.cpp backend needs a GGUF file, and this model is an HF-format folder",
                         "use --backend torch, or pass a .gguf file")

    # GGUF on llama.cpp (explicit, or auto)
    if device == "cpu":
        if wants_layers:
            raise UsageError("--gpu-layers conflicts with --device cpu")
        why = "--backend llama.cpp was given" if backend == "llama.cpp" else "GGUF model"
        return Choice("llama.cpp", f"{why}; --device cpu: no GPU offload", 0)
    if on_gpu and not gpu_offload:
        if backend == "llama.cpp":
            raise UsageError(f"--device {device} with the llama.cpp backend: {_NO_GPU_BUILD[0]}", _NO_GPU_BUILD[1])
        return Choice("torch", f"GGUF with --device {device}, and {_NO_GPU_BUILD[0]}: torch on the GPU "
                               "(weights dequantized; the conversion is cached)")
    if wants_layers and not gpu_offload:
        raise UsageError(f"--gpu-layers {gpu_layers}: {_NO_GPU_BUILD[0]}", _NO_GPU_BUILD[1])
    why = "--backend llama.cpp was given" if backend == "llama.cpp" else \
        "GGUF model: llama.cpp runs quantized weights fastest"
    if gpu_offload:
        layers = ALL_LAYERS if gpu_layers is None else gpu_layers
        where = "all layers" if layers == ALL_LAYERS else f"{layers} layers"
        return Choice("llama.cpp", f"{why}; GPU offload of {where} (llama-cpp-python has GPU support)", layers)
    return Choice("llama.cpp", f"{why}; on CPU (this llama-cpp-python has no GPU support)", 0)


def _choose_remote(model_format: str, backend: str, device: str | None, gpu_layers: int | None) -> Choice:
    """A URL runs on the server it names: nothing local applies to it."""
    if model_format != "remote":
        raise UsageError("--backend remote needs a server URL as the model",
                         "pass -m http://HOST:PORT/v1 (or a store name imported from a URL)")
    if backend != "auto" and backend != "remote":
        raise UsageError(f"--backend {backend} cannot run a model served at a URL", "drop --backend for a URL")
    if device is not None or gpu_layers is not None:
        flag = "--device" if device is not None else "--gpu-layers"
        raise UsageError(f"{flag} does not apply to a model served at a URL",
                         "the server decides where the model runs; drop the option")
    return Choice("remote", "the model is a server URL: the remote backend (OpenAI API)")


def load_backend(ref, opts: BackendOptions):
    """Resolve the rule against the real machine and load the chosen backend."""
    facts = _facts(ref.format, opts)
    choice = choose(ref.format, opts.backend, opts.device, gpu_layers=opts.gpu_layers, **facts)
    if choice.backend == "remote":
        import os

        from llmcli.backends.remote import load

        return load(ref, opts.api_key, os.environ, reason=choice.reason)
    if choice.backend == "llama.cpp":
        from llmcli.backends.llamacpp import LlamaCppBackend

        adapter = getattr(ref, "adapter", None)
        return LlamaCppBackend(ref.path, ctx_cap=opts.ctx, threads=opts.threads, gpu_layers=choice.gpu_layers,
                               verbose=opts.library_logs, reason=choice.reason,
                               lora=Path(adapter) / ADAPTER_GGUF if adapter is not None else None)
    from llmcli.backends.torch import TorchBackend

    return TorchBackend(ref, opts, reason=choice.reason)


def _facts(model_format: str, opts: BackendOptions) -> dict:
    """Only the facts the rule needs for this model, since asking costs imports (torch ≈3 s)."""
    facts: dict = {}
    if model_format == "remote":
        return facts
    backend = opts.backend
    if model_format == "gguf" and backend != "torch":
        facts["gpu_offload"] = _llama_gpu_offload()
    if model_format != "gguf" and backend == "auto" and not opts.device:
        import torch  # a hard dependency
        facts["cuda_available"] = bool(torch.cuda.is_available())
        mps = getattr(torch.backends, "mps", None)
        facts["mps_available"] = bool(mps is not None and mps.is_available())
    return facts


def _llama_gpu_offload() -> bool:
    import llama_cpp  # a hard dependency; imported here, where it is needed

    try:
        return bool(llama_cpp.llama_supports_gpu_offload())
    except (AttributeError, OSError):
        return False
