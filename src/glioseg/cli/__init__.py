"""The ``glioseg`` command line. Thin: parses arguments, calls the library, prints.

One module per command group; this file registers the commands in workflow order, which is the
order ``glioseg --help`` lists them in. Heavy imports (torch, nibabel, matplotlib) happen inside
the commands so that ``glioseg --help`` is instant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from glioseg.cli import cv, data, evaluate, models, postprocess, predict, preprocess, show, train
from glioseg.cli import radiomics as radiomics_cli
from glioseg.cli import seg as seg_cli
from glioseg.cli import view as view_cli
from glioseg.cli.app import OneLineErrorGroup, app, fail, version

# (command name, function) in the order a user meets them; "group sub" names a command of a group
COMMANDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("check", data.check),
    ("preprocess", preprocess.preprocess),
    ("split", preprocess.split),
    ("train", train.train),
    ("predict", predict.predict),
    ("dicom-seg", seg_cli.dicom_seg),
    ("tune-postprocess", postprocess.tune_postprocess_cmd),
    ("evaluate", evaluate.evaluate),
    ("cv", cv.cv),
    ("features", radiomics_cli.features),
    ("survival fit", radiomics_cli.survival_fit),
    ("survival predict", radiomics_cli.survival_predict),
    ("grade", radiomics_cli.grade),
    ("grade-fit", radiomics_cli.grade_fit),
    ("show", show.show),
    ("view", view_cli.view),
    ("plot-curves", train.plot_curves),
    ("info", data.info),
    ("synth", data.synth),
    ("export-model", models.export_model_cmd),
    ("import-model", models.import_model_cmd),
    ("version", version),
)
GROUPS: dict[str, str] = {
    "survival": "Overall survival in days and class: fit the age baseline and radiomics models, predict.",
}


def _register() -> None:
    """Adds every command of COMMANDS to the app, in their order, groups in the place of their first command."""
    groups: dict[str, typer.Typer] = {}
    for name, command in COMMANDS:
        group, _, sub = name.partition(" ")
        if not sub:
            app.command(name)(command)
            continue
        if group not in groups:
            groups[group] = typer.Typer(help=GROUPS[group], no_args_is_help=True)
            app.add_typer(groups[group], name=group)
        groups[group].command(sub)(command)
    OneLineErrorGroup.order = tuple(dict.fromkeys(name.partition(" ")[0] for name, _ in COMMANDS))


_register()

__all__ = ["COMMANDS", "GROUPS", "app", "fail"]
