"""Benchmarks that print a table with ratios against a reference measured in the same run.

Suites: ``core`` (llama.cpp backend vs llama-cpp-python), ``torch`` (torch backend vs
transformers' ``generate``), ``chat`` (time to first token as a conversation grows, with and
without prefix reuse), ``remote`` (``llmcli generate -m URL`` vs the ``openai`` client alone; needs
``-m URL``). Each module's ``run(model, threads, repeats)`` returns table rows.
``gpu`` (``gpu.py``) is the prepared GPU check: it needs no model (random weights from configs)
and runs the GPU-marked tests too; its ``run_check(quick=…, repeats=…)`` returns its table."""

from __future__ import annotations

SUITES = {
    "core": "llmcli.bench.core",
    "torch": "llmcli.bench.torch",
    "chat": "llmcli.bench.chat",
    "remote": "llmcli.bench.remote",
    "gpu": "llmcli.bench.gpu",
}
MODEL_FREE = frozenset({"gpu"})
