"""`llmcli bench` argument handling (the suites themselves are benchmarks, run by hand and recorded in
docs/performance.md, not timed in tests)."""

from __future__ import annotations

from conftest import run_cli


def test_unknown_suite_is_a_usage_error_naming_the_suites():
    r = run_cli("bench", "--suite", "nope")
    assert r.returncode == 2
    assert "unknown suite 'nope'" in r.stderr and "core, torch, chat" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_repeats_must_be_positive():
    r = run_cli("bench", "--repeats", "0")
    assert r.returncode == 2 and "--repeats must be >= 1" in r.stderr


def test_help_lists_the_suites():
    r = run_cli("bench", "--help")
    assert r.returncode == 0 and "core, torch, chat, remote or gpu" in r.stdout and "--quick" in r.stdout
