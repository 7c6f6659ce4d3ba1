"""Benchmarks that print a table with ratios against a reference measured in the same run.

Suites: ``core`` (llama.cpp backend vs llama-cpp-python), ``torch`` (torch backend vs
transformers' ``generate``), ``chat`` (time to first token as a conversation grows, with and
without prefix reuse), ``remote`` (``llmcli generate -m URL`` vs the ``openai`` client alone; needs
``-m URL``). Each module's ``run(model, threads, repeats)`` returns table rows."""

from __future__ import annotations

SUITES = {
    "core": "llmcli.bench.core",
    "torch": "llmcli.bench.torch",
    "chat": "llmcli.bench.chat",
    "remote": "llmcli.bench.remote",
}
