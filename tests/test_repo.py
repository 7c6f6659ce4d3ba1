"""The promises README.md makes about set-up are the ones CI checks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_exactly_the_readme_test_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Run the tests", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert block and all(line in ci for line in block), block
    assert "set -euo pipefail" in ci


def test_every_command_is_documented():
    from llmcli.cli.app import app

    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for info in app.registered_commands:
        assert f"llmcli {info.name}" in docs, info.name
    for group in app.registered_groups:
        assert f"llmcli {group.name}" in docs, group.name
