"""Rendered help: bracketed text survives typer's rich markup; `glioseg --help` lists commands in workflow order."""

import re

import pytest
import typer
from typer.testing import CliRunner

from glioseg.cli import COMMANDS, app

runner = CliRunner()
WIDE = {"COLUMNS": "250"}  # one help line per option: no wrapping inside the bracketed text


def _rendered(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def _bracketed_help(command: str) -> list[str]:
    """Each option help's bracketed pieces, as the help should show them (escapes removed)."""
    click_command = typer.main.get_command(app)
    for word in command.split():  # "survival fit": the group, then its command
        click_command = click_command.commands[word]  # type: ignore[attr-defined]
    texts = [" ".join(p.help.split()) for p in click_command.params if getattr(p, "help", None)]
    return [m for text in texts for m in re.findall(r"\[[^\]]*[\])]", text.replace("\\[", "["))]


@pytest.mark.parametrize("command", [name for name, _ in COMMANDS if name != "version"])
def test_bracketed_help_text_is_shown(command):
    rendered = _rendered(*command.split())
    for piece in _bracketed_help(command):
        assert piece in rendered, f"{command} --help lost {piece!r}"


def test_predict_help_shows_its_defaults_in_brackets():
    rendered = _rendered("predict")
    for text in ("e.g. 0,1,2 [all].", "installed model name [shipped default model].", "CPU threads [one per core];",
                 "[the one its layout implies].", "[the input's, else brats2017].", "overlap in [0, 1)."):
        assert text in rendered, text


def test_other_commands_show_their_defaults_in_brackets():
    assert "spacing in mm [keep]." in _rendered("preprocess")
    assert "Output [PREPROCESSED/splits.json]." in _rendered("split")
    assert "splits.json [the runs' recorded splits]." in _rendered("tune-postprocess")
    assert "[detected, preferring the ground truths']." in _rendered("evaluate")


def test_top_level_help_lists_the_workflow_in_order():
    output = runner.invoke(app, ["--help"], env=WIDE).output
    listed = re.findall(r"^│ ([a-z][a-z-]*) ", output, flags=re.MULTILINE)
    workflow = ["check", "preprocess", "split", "train", "predict", "tune-postprocess", "evaluate", "show"]
    assert [name for name in listed if name in workflow] == workflow
    top = list(dict.fromkeys(name.split()[0] for name, _ in COMMANDS))
    assert listed == top  # every command and group, in the order cli/__init__ registers them


def test_a_group_lists_its_commands_and_runs_them():
    output = runner.invoke(app, ["survival", "--help"], env=WIDE).output
    listed = re.findall(r"^│ ([a-z][a-z-]*) ", output, flags=re.MULTILINE)
    assert listed == [name.split()[1] for name, _ in COMMANDS if name.startswith("survival ")] == ["fit", "predict"]
    assert runner.invoke(app, ["survival", "fit", "--help"], env=WIDE).exit_code == 0
    assert "No such command" in runner.invoke(app, ["survival", "refit"], env=WIDE).output
