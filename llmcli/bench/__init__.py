"""Benchmarks that print a table with ratios against a reference measured in the same run.

Suites: ``core`` (this module's core.py). Other suites register in SUITES."""

from __future__ import annotations

SUITES = {
    "core": "llmcli.bench.core",
    "torch": "llmcli.bench.torch",
    "chat": "llmcli.bench.chat",
}
