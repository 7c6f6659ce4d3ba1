"""Real OpenAI-compatible servers on 127.0.0.1 for the remote-backend tests: llama-cpp-python's
own server, llama.cpp's native ``llama-server`` (built by ``llama_tools``), and a distributed
``llama-server`` whose layers run on two ``ggml-rpc-server`` workers.

Every server gets a free port, is waited for until ``/v1/models`` answers, and is stopped at
the end (a distributed one before its workers: llama-server aborts when a worker vanishes)."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CTX = 2048
THREADS = "1"  # a 2-thread llama.cpp crawls when the machine is oversubscribed (barrier spins)

# llama-cpp-python's server builds ``Llama`` with llama.cpp's default model parameters; on AMX
# CPUs those repack weights for a kernel that segfaults (docs/backends.md). llmcli's bench
# already wraps ``Llama`` with llmcli's own parameters: the server gets the same wrapper.
_LCPP_SERVER = """
import runpy, sys
from llmcli.bench.core import same_model_params
sys.argv = ["llama_cpp.server", *sys.argv[1:]]
with same_model_params():
    runpy.run_module("llama_cpp.server", run_name="__main__")
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server process with its log in a file (a pipe nobody reads would fill and block it)."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, env: dict | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        atexit.register(self.stop)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, then SIGKILL; also runs at interpreter exit so a killed test run leaves no server."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class Server:
    def __init__(self, kind: str, url: str, procs: list[Proc], api_key: str | None = None):
        self.kind = kind  # "llama-cpp-python" | "llama-server" | "llama-server-rpc"
        self.url = url  # the OpenAI API root, .../v1
        self.procs = procs  # the server last; workers before it
        self.api_key = api_key

    @property
    def main(self) -> Proc:
        return self.procs[-1]

    def model_ids(self) -> list[str]:
        return [m["id"] for m in get_json(self.url + "/models", self.api_key)["data"]]

    def stop(self) -> None:
        for p in reversed(self.procs):  # the server before its workers
            p.stop()


def get_json(url: str, api_key: str | None = None, timeout: float = 5):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_ready(server: Server, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in server.procs:
            if not p.alive():
                server.stop()
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{p.log()}")
        try:
            if server.model_ids():
                return
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{server.kind} did not start within {timeout} s:\n{server.main.log()}")


def start_llama_cpp_python(gguf: Path, log_dir: Path, *, api_key: str | None = None,
                           model_alias: str | None = None) -> Server:
    port = free_port()
    cmd = [sys.executable, "-c", _LCPP_SERVER, "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(CTX), "--n_threads", THREADS, "--verbose", "false", "--model_alias", model_alias or "smollm2"]
    if api_key:
        cmd += ["--api_key", api_key]
    server = Server("llama-cpp-python", f"http://127.0.0.1:{port}/v1",
                    [Proc(f"llama-cpp-python-{port}", cmd, log_dir)], api_key)
    wait_ready(server)
    return server


def _llama_server_cmd(binary: Path, gguf: Path, port: int, api_key: str | None, extra: list[str],
                      slots: int = 1) -> list[str]:
    # -c is shared by the slots: each of N slots gets a window of CTX/N tokens.
    cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-c", str(CTX), "-t", THREADS,
           "-np", str(slots), "--no-repack", "--no-webui", *extra]
    if api_key:
        cmd += ["--api-key", api_key]
    return cmd


def start_llama_server(binaries: dict, gguf: Path, log_dir: Path, *, api_key: str | None = None,
                       alias: str | None = None, slots: int = 1) -> Server:
    port = free_port()
    extra = ["--alias", alias or "smollm2"]
    cmd = _llama_server_cmd(binaries["llama-server"], gguf, port, api_key, extra, slots)
    server = Server("llama-server", f"http://127.0.0.1:{port}/v1", [Proc(f"llama-server-{port}", cmd, log_dir)],
                    api_key)
    wait_ready(server)
    return server


def start_rpc_cluster(binaries: dict, gguf: Path, log_dir: Path, workers: int = 2) -> Server:
    """``workers`` rpc-server processes on loopback ports and one llama-server splitting the model's
    layers across them (``--rpc`` … ``-ngl 99``): the multi-host topology, on one machine."""
    procs, endpoints = [], []
    for _ in range(workers):
        port = free_port()
        procs.append(Proc(f"rpc-server-{port}", [str(binaries["ggml-rpc-server"]), "-H", "127.0.0.1", "-p", str(port),
                                                 "-t", "1"], log_dir))
        endpoints.append(f"127.0.0.1:{port}")
    for host_port in endpoints:
        _wait_port(host_port, procs)
    port = free_port()
    cmd = _llama_server_cmd(binaries["llama-server"], gguf, port, None, ["--rpc", ",".join(endpoints), "-ngl", "99"])
    procs.append(Proc(f"llama-server-rpc-{port}", cmd, log_dir))
    server = Server("llama-server-rpc", f"http://127.0.0.1:{port}/v1", procs)
    wait_ready(server)
    return server


def _wait_port(host_port: str, procs: list[Proc], timeout: float = 30) -> None:
    host, port = host_port.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            if not all(p.alive() for p in procs):
                break
            time.sleep(0.1)
    for p in procs:
        p.stop()
    raise RuntimeError(f"rpc worker on {host_port} did not start:\n" + "\n".join(p.log() for p in procs))
