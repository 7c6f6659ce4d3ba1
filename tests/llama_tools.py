"""llama.cpp's native ``llama-server`` and ``ggml-rpc-server``, built once from the llama.cpp
source vendored in the installed llama-cpp-python's sdist (the same commit as the library).

The build lives outside the repository, in ``~/.cache/llmcli-tests/llama.cpp-<version>``
(``LLMCLI_TEST_TOOLS_DIR`` overrides the root), under a file lock so parallel test sessions
never build twice or read a half-built tree. A finished build leaves a ``built.ok`` marker;
nothing else is trusted. Run ``python tests/llama_tools.py`` to build by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

TARGETS = ("llama-server", "ggml-rpc-server")
# Flags: no HTTPS (no OpenSSL headers needed), no web UI (its assets come from the network),
# static so the two binaries need no LD_LIBRARY_PATH.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DGGML_RPC=ON",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_CURL=OFF",
)


class Unavailable(Exception):
    """The tools cannot be built here (no compiler, no cmake, no sdist): tests skip with this reason."""


def version() -> str:
    return metadata.version("llama-cpp-python")


def root() -> Path:
    base = os.environ.get("LLMCLI_TEST_TOOLS_DIR")
    return Path(base) if base else Path.home() / ".cache" / "llmcli-tests"


def build_dir() -> Path:
    return root() / f"llama.cpp-{version()}"


def binaries(folder: Path) -> dict[str, Path]:
    return {t: folder / "build" / "bin" / t for t in TARGETS}


def missing_toolchain() -> str | None:
    for tool in ("cmake", "c++", "cc"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH: cannot build llama.cpp's llama-server"
    return None


def ensure_built(log=sys.stderr) -> dict[str, Path]:
    """Paths of the built binaries, building them first if needed (minutes, once per version)."""
    from filelock import FileLock

    folder = build_dir()
    marker = folder / "built.ok"
    if marker.is_file():
        return binaries(folder)
    reason = missing_toolchain()
    if reason:
        raise Unavailable(reason)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if marker.is_file():  # another session built it while we waited
            return binaries(folder)
        src = _unpacked_source(folder, log)
        build = folder / "build"
        jobs = str(os.cpu_count() or 2)
        _run(["cmake", "-S", str(src), "-B", str(build), *CMAKE_FLAGS], log)
        _run(["cmake", "--build", str(build), "--config", "Release", "-j", jobs, "--target", *TARGETS], log)
        for path in binaries(folder).values():
            if not path.is_file():
                raise Unavailable(f"the build finished without {path}")
        marker.write_text(version() + "\n")
    return binaries(folder)


def _unpacked_source(folder: Path, log) -> Path:
    src = folder / "src"
    ready = folder / "src.ok"
    if ready.is_file():
        return src
    shutil.rmtree(src, ignore_errors=True)
    dl = folder / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    sdists = list(dl.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              f"llama-cpp-python=={version()}", "-d", str(dl)], log)
        sdists = list(dl.glob("llama_cpp_python-*.tar.gz"))
        if not sdists:
            raise Unavailable("pip download did not produce the llama-cpp-python sdist")
    prefix = "llama_cpp_python-" + version() + "/vendor/llama.cpp/"
    with tarfile.open(sdists[0]) as tar:
        members = []
        for m in tar.getmembers():
            if m.name.startswith(prefix) and len(m.name) > len(prefix):
                m.name = m.name[len(prefix):]
                members.append(m)
        try:
            tar.extractall(src, members=members, filter="data")
        except TypeError:  # Python without extraction filters (< 3.10.12 / 3.11.4)
            tar.extractall(src, members=members)
    ready.write_text("ok\n")
    return src


def _run(cmd: list[str], log) -> None:
    print("+ " + " ".join(cmd), file=log, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}):\n{tail}")


if __name__ == "__main__":
    for name, path in ensure_built().items():
        print(name, path)
