"""Errors stay one line in logs and CI output: no 80-column wrapping when stderr/stdout is not a terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from glioseg.cli import app, fail
from glioseg.cli.app import CaseBar, console

runner = CliRunner()
LONG = "/nonexistent/" + "a" * 300 + "/case"
BAD_OPTION = "--" + "x" * 200
GLIOSEG = Path(sys.executable).with_name("glioseg")


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_fail_joins_a_multi_line_message(capsys):
    with pytest.raises(typer.Exit) as info:
        fail("first part\n  second part\n")
    assert info.value.exit_code == 1
    assert capsys.readouterr().err == "error: first part second part\n"


def test_long_error_is_one_line_through_clirunner():
    result = runner.invoke(app, ["info", LONG])
    assert result.exit_code != 0
    assert len(_lines_with(result.output, LONG)) == 1


def test_usage_error_is_one_line_through_clirunner():
    # rich's boxed error panel wraps at 80 columns without a terminal; click's plain "Error:" line does not
    result = runner.invoke(app, ["check", "ds", BAD_OPTION])
    assert result.exit_code == 2
    lines = _lines_with(result.output, BAD_OPTION)
    assert len(lines) == 1 and lines[0].startswith("Error: No such option")


def test_no_arguments_prints_help_once():
    result = runner.invoke(app, [])
    assert result.output.count("Usage: ") == 1 and "check" in result.output


def test_case_bar_failure_is_one_line(capsys):
    message = f"case X: cannot read {LONG}"
    with CaseBar("predict", 1) as bar:
        bar.advance("X", "failed", message)
    assert len(_lines_with(capsys.readouterr().out, LONG)) == 1


def test_console_does_not_wrap_without_a_terminal(capsys):
    console().print("word " * 100)
    assert capsys.readouterr().out.count("\n") == 1


@pytest.mark.skipif(not GLIOSEG.exists(), reason="console script not installed next to the interpreter")
@pytest.mark.parametrize("args,needle", [
    (["check", LONG], LONG),
    (["info", LONG], LONG),
    (["check", "ds", BAD_OPTION], BAD_OPTION),
])
def test_long_error_is_one_line_through_a_pipe(args, needle, tmp_path):
    done = subprocess.run([str(GLIOSEG), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(_lines_with(done.stdout + done.stderr, needle)) == 1
