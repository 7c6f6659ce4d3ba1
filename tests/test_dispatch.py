"""The dispatch rule with the hardware facts injected, device/dtype resolution, and what -v says."""

from __future__ import annotations

import pytest

from conftest import run_cli
from llmcli.backends.hardware import nvidia_driver_present
from llmcli.backends.select import ALL_LAYERS, HEADROOM_TOKENS, RUNTIME_OVERHEAD, GpuRoom, choose
from llmcli.backends.torch_env import TorchFacts, parse_device, parse_dtype, resolve_device, resolve_dtype
from llmcli.errors import BackendError, UsageError

CUDA = dict(cuda_available=True)
GPU_LLAMA = dict(gpu_offload=True)
GB = 10**9
# An 8B Llama (GQA: 32 layers × 8 KV heads × 256 values × 2 B = 131072 B a token) on an 80 GB and an 8 GB GPU
BIG_GPU = dict(nvidia_driver=True, cuda_available=True, gpu_room=GpuRoom(80 * GB, 8_030_000_000, 2, 131072, "H100"))
SMALL_GPU = dict(nvidia_driver=True, cuda_available=True, gpu_room=GpuRoom(8 * GB, 8_030_000_000, 2, 131072, "T4"))


@pytest.mark.parametrize("fmt,backend,device,facts,layers,expect,why", [
    # HF folder: torch, on the best device
    ("hf", "auto", None, CUDA, None, ("torch", 0), "CUDA GPU"),
    ("hf", "auto", None, dict(mps_available=True), None, ("torch", 0), "MPS"),
    ("hf", "auto", None, {}, None, ("torch", 0), "faster on CPU"),
    ("hf", "auto", "cpu", CUDA, None, ("torch", 0), "--device cpu"),
    ("hf", "torch", None, {}, None, ("torch", 0), "--backend torch"),
    # GGUF: llama.cpp, offloading to the GPU when llama-cpp-python can
    ("gguf", "auto", None, {}, None, ("llama.cpp", 0), "on CPU"),
    ("gguf", "auto", None, dict(CUDA, **GPU_LLAMA), None, ("llama.cpp", ALL_LAYERS), "all layers"),
    ("gguf", "auto", None, GPU_LLAMA, 12, ("llama.cpp", 12), "12 layers"),
    ("gguf", "auto", "cpu", GPU_LLAMA, None, ("llama.cpp", 0), "--device cpu"),
    ("gguf", "auto", "cuda", GPU_LLAMA, None, ("llama.cpp", ALL_LAYERS), "GPU offload"),
    # GGUF on a GPU that llama.cpp cannot use: torch (dequantized)
    ("gguf", "auto", "cuda", CUDA, None, ("torch", 0), "built without GPU support"),
    ("gguf", "auto", "cuda:1", {}, None, ("torch", 0), "dequantized"),
    ("gguf", "torch", None, {}, None, ("torch", 0), "--backend torch"),
    ("gguf", "llama.cpp", None, {}, 0, ("llama.cpp", 0), "--backend llama.cpp"),
    # GGUF, no --device, llama.cpp without GPU support: torch on a CUDA GPU when the dequantized model fits
    ("gguf", "auto", None, {}, None, ("llama.cpp", 0), "on CPU (no NVIDIA driver found)"),
    ("gguf", "auto", None, dict(nvidia_driver=True), None, ("llama.cpp", 0), "this torch cannot use CUDA"),
    ("gguf", "auto", None, BIG_GPU, None, ("torch", 0),
     "torch on the GPU (weights dequantized, the conversion is cached; it fits: 8.0B params × 2 B = 16.06 GB weights"
     " + 0.54 GB KV cache for 4096 tokens + 1.07 GB runtime = 17.67 GB ≤ 80.00 GB free on H100)"),
    ("gguf", "auto", None, SMALL_GPU, None, ("llama.cpp", 0),
     "on CPU (the dequantized model does not fit the CUDA GPU: 8.0B params × 2 B = 16.06 GB weights"),
    ("gguf", "auto", None, dict(SMALL_GPU, gpu_room=GpuRoom(8 * GB, 135_000_000, 2, 23040, "T4")), None,
     ("torch", 0), "135M params × 2 B = 0.27 GB weights + 0.09 GB KV cache"),
    ("gguf", "auto", None, dict(BIG_GPU, gpu_room=GpuRoom(80 * GB, None)), None, ("llama.cpp", 0),
     "parameter count could not be read"),
    ("gguf", "auto", None, dict(BIG_GPU, **GPU_LLAMA), None, ("llama.cpp", ALL_LAYERS), "all layers"),
    ("gguf", "llama.cpp", None, BIG_GPU, None, ("llama.cpp", 0), "--backend llama.cpp was given; on CPU"),
    ("gguf", "auto", "cpu", BIG_GPU, None, ("llama.cpp", 0), "--device cpu"),
])
def test_rule(fmt, backend, device, facts, layers, expect, why):
    c = choose(fmt, backend, device, gpu_layers=layers, **facts)
    assert (c.backend, c.gpu_layers) == expect and why in c.reason


def test_gpu_fit_boundary():
    """Fits exactly when weights + KV headroom + runtime overhead ≤ free memory."""
    need = 1_000_000 * 2 + 100 * HEADROOM_TOKENS + RUNTIME_OVERHEAD
    assert GpuRoom(need, 1_000_000, 2, 100).fit()[0]
    assert not GpuRoom(need - 1, 1_000_000, 2, 100).fit()[0]
    assert not GpuRoom(need, 1_000_000, 4, 100).fit()[0]  # --dtype float32: 4 bytes a parameter


def test_driver_detection_reads_files_only(tmp_path):
    version = tmp_path / "version"
    assert not nvidia_driver_present((str(version), str(tmp_path / "nvidia0")))
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14\n")
    assert nvidia_driver_present((str(version), str(tmp_path / "nvidia0")))


def test_gguf_run_without_driver_never_imports_torch(gguf_path):
    """On this CPU-only machine (no NVIDIA driver) a GGUF run does not pay ≈3 s for `import torch`."""
    if nvidia_driver_present():
        pytest.skip("an NVIDIA driver is present here: torch is imported to ask about the GPU")
    r = run_cli("generate", "-m", str(gguf_path), "--temperature", "0", "--max-tokens", "1", "Hi", check=True,
                env={"PYTHONPROFILEIMPORTTIME": "1", "LLMCLI_DEBUG": "1"})
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "llama_cpp" in imported and "torch" not in imported and "transformers" not in imported


@pytest.mark.parametrize("fmt,backend,device,facts,layers,needle", [
    ("hf", "llama.cpp", None, {}, None, "needs a GGUF"),
    ("gguf", "llama.cpp", "cuda", {}, None, "without GPU support"),
    ("gguf", "auto", None, {}, 10, "--gpu-layers 10"),
    ("gguf", "auto", "cpu", GPU_LLAMA, 5, "conflicts with --device cpu"),
    ("hf", "auto", None, CUDA, 5, "llama.cpp backend only"),
])
def test_rule_refuses(fmt, backend, device, facts, layers, needle):
    with pytest.raises(UsageError, match=needle):
        choose(fmt, backend, device, gpu_layers=layers, **facts)


def test_device_and_dtype_resolution():
    none, one_old, one_new = TorchFacts(), TorchFacts(1, False, False, "T4"), TorchFacts(2, True, False, "A100")
    assert resolve_device(None, none)[0] == "cpu"
    assert resolve_device(None, TorchFacts(mps=True))[0] == "mps"
    assert resolve_device(None, one_new) == ("cuda:0", "CUDA GPU found (A100)")
    assert resolve_device("cuda:1", one_new)[0] == "cuda:1"
    assert resolve_device("cpu", one_new)[0] == "cpu"
    for dev, facts in [("cuda", none), ("cuda:1", one_old), ("mps", none)]:
        with pytest.raises(BackendError):
            resolve_device(dev, facts)
    assert resolve_dtype(None, "cpu", one_new)[0] == "float32"
    assert resolve_dtype(None, "cuda:0", one_new)[0] == "bfloat16"
    assert resolve_dtype(None, "cuda:0", one_old)[0] == "float16"
    assert resolve_dtype(None, "mps", none)[0] == "float16"
    assert resolve_dtype("float16", "cpu", none)[0] == "float16"
    with pytest.raises(UsageError):
        resolve_dtype("bfloat16", "cuda:0", one_old)
    assert parse_dtype("bf16") == "bfloat16" and parse_dtype("auto") is None and parse_device("GPU") == "cuda"
    with pytest.raises(UsageError, match="--dtype"):
        parse_dtype("nonsense")


def test_verbose_explains_the_choice_on_this_machine(gguf_path):
    r = run_cli("generate", "-v", "-m", str(gguf_path), "--temperature", "0", "--max-tokens", "2", "Hi", check=True)
    line = next(x for x in r.stderr.splitlines() if x.startswith("model: "))
    assert "backend: llama.cpp" in line and "why: GGUF model: llama.cpp runs quantized weights fastest" in line
    assert "on CPU" in line
    if not nvidia_driver_present():
        assert "on CPU (no NVIDIA driver found)" in line
    # -v is for people: the explanation, not llama.cpp's thousands of log lines (LLMCLI_DEBUG=1 has those)
    assert not any("llama_model_loader" in x for x in r.stderr.splitlines())
    r = run_cli("generate", "-m", str(gguf_path), "--temperature", "0", "--max-tokens", "2", "Hi", check=True,
                env={"LLMCLI_DEBUG": "1"})
    assert any("llama_model_loader" in x for x in r.stderr.splitlines())


def _one_line_error(r, code, needle):
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == code, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_unhonourable_flags_are_one_line_errors(gguf_path):
    m = ["generate", "-m", str(gguf_path), "hi"]
    _one_line_error(run_cli(*m, "--backend", "llama.cpp", "--device", "cuda"), 2, "without GPU support")
    _one_line_error(run_cli(*m, "--gpu-layers", "8"), 2, "--gpu-layers 8")
    _one_line_error(run_cli(*m, "--dtype", "nonsense"), 2, "--dtype")
    _one_line_error(run_cli(*m, "--device", "quantum"), 2, "--device")
