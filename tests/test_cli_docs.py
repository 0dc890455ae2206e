"""Every CLI command has help and a section in docs/cli.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from covey.cli.main import cli

DOCS = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_command_is_documented_and_has_help(name: str) -> None:
    assert f"## `covey {name}" in DOCS, f"docs/cli.md has no section for covey {name}"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert cli.commands[name].help, f"covey {name} has no help text"
