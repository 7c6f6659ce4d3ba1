"""Remote benchmark: ``llmcli generate -m URL`` against the ``openai`` client alone, on the same
server, with the same request (the remote backend builds both), interleaved.

- generation tokens/s and time to first token: llmcli's ``--json`` timings (a real CLI
  subprocess) against the same streamed request made directly with ``openai`` in a new process
  that first lists the models, as llmcli does;
- start to first request: from spawning ``llmcli generate -m URL`` to the moment a listener
  standing in for the server accepts its first connection, against a bare Python script that
  imports ``openai`` and lists the models.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time

from llmcli.bench.table import Row

PROMPT = "Write a long story about a lighthouse keeper and a storm."
MAX_TOKENS = 128
_BARE_CLIENT = ("import sys, openai\n"
                "openai.OpenAI(base_url=sys.argv[1], api_key='EMPTY', max_retries=0).models.list()\n")


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _llmcli_once(url: str) -> tuple[float, float, int]:
    cmd = [sys.executable, "-m", "llmcli", "generate", "-m", url, "--temperature", "0", "--max-tokens",
           str(MAX_TOKENS), "--json", PROMPT]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout
    rec = json.loads(out)
    t = rec["timings"]
    return t["generation_tokens_per_s"], t["time_to_first_token_s"], rec["usage"]["completion_tokens"]


# The reference runs in a fresh process too, doing what llmcli does before its first token (list
# the models, then stream the same request), so both pay the same first-call costs of openai.
_REFERENCE = """
import json, sys, time, openai
url, kwargs = sys.argv[1], json.loads(sys.argv[2])
client = openai.OpenAI(base_url=url, api_key="EMPTY")
client.models.list()
start = time.perf_counter()
first = last = None
n = 0
for chunk in client.chat.completions.create(**kwargs):
    for c in chunk.choices or ():
        if c.delta is not None and c.delta.content:
            last = time.perf_counter()
            first = first or last
            n += 1
rate = (n - 1) / (last - first) if n > 1 and last > first else 0.0
print(json.dumps([rate, (first - start) if first else 0.0, n]))
"""


def _openai_once(backend) -> tuple[float, float, int]:
    """The same request straight through ``openai`` in a new process: the reference."""
    from llmcli.backends.base import Message, SamplingParams

    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    kwargs = backend.request(backend.encode(messages=[Message("user", PROMPT)]), params, seed=0)
    out = subprocess.run([sys.executable, "-c", _REFERENCE, backend.url, json.dumps(kwargs)], capture_output=True,
                         text=True, check=True, stdin=subprocess.DEVNULL).stdout
    rate, ttft, n = json.loads(out)
    return rate, ttft, n


def _first_request_s(cmd: list[str]) -> float:
    """Seconds from spawning ``cmd`` to its first connection on a local listener (the request it
    sends is not answered; the process is then killed)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        full = [a.replace("{URL}", f"http://127.0.0.1:{port}/v1") for a in cmd]
        env = dict(os.environ, LLMCLI_API_KEY="", OPENAI_API_KEY="")
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                env=env)
        srv.settimeout(30)
        try:
            conn, _ = srv.accept()
            elapsed = time.perf_counter() - t0
            conn.close()
        finally:
            proc.kill()
            proc.wait()
    return elapsed


def run(model, threads: int | None, repeats: int = 5) -> list[Row]:
    from llmcli.backends.remote import RemoteBackend
    from llmcli.backends.remote_http import api_key
    from llmcli.store.refs import parse_model_url

    url, model_id = parse_model_url(str(model))
    backend = RemoteBackend(url, model_id, api_key(None, os.environ))
    ours_rate, ref_rate, ours_ttft, ref_ttft = [], [], [], []
    try:
        _openai_once(backend)  # warm the server's prompt cache for both sides alike
        for i in range(repeats):
            r, t, n = _llmcli_once(url + (f"#{model_id}" if model_id else ""))
            ours_rate.append(r)
            ours_ttft.append(t)
            r2, t2, n2 = _openai_once(backend)
            ref_rate.append(r2)
            ref_ttft.append(t2)
            _log(f"  repeat {i + 1}/{repeats}: llmcli {r:.1f} tok/s, TTFT {t * 1000:.1f} ms ({n} tokens) | "
                 f"openai {r2:.1f} tok/s, TTFT {t2 * 1000:.1f} ms ({n2} chunks)")
    finally:
        backend.close()
    ours_start, ref_start = [], []
    llmcli_cmd = [sys.executable, "-m", "llmcli", "generate", "-m", "{URL}", "Hi"]
    bare_cmd = [sys.executable, "-c", _BARE_CLIENT, "{URL}"]
    for _ in range(repeats):
        ours_start.append(_first_request_s(llmcli_cmd))
        ref_start.append(_first_request_s(bare_cmd))
    med = statistics.median
    ref = "openai client alone, same request, fresh process"
    return [
        Row("generation", med(ours_rate), med(ref_rate), "tok/s", ref),
        Row("time to first token", med(ours_ttft) * 1000, med(ref_ttft) * 1000, "ms", ref, lower_is_better=True),
        Row("start to first request", med(ours_start) * 1000, med(ref_start) * 1000, "ms",
            "python -c 'import openai; …models.list()'", lower_is_better=True),
    ]

