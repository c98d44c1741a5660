"""Help of the training and model commands: bracketed defaults survive typer's rich markup."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from glioseg.cli import app


@pytest.mark.parametrize("command,expected", [
    ("train", ["[the run's, else isensee2017]", "[first]", "[RUN's, PREPROCESSED's, or new]"]),
    ("import-model", ["[~/.glioseg/models]", "[the manifest's name]"]),
])
def test_help_keeps_bracketed_defaults(command, expected):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich may wrap lines
    for phrase in expected:
        assert phrase in text, f"{phrase!r} missing from `glioseg {command} --help`"
    assert "\\[" not in text  # the escape itself is not shown
