"""Training curves: the trainer's log columns are plotted, missing columns tolerated, bad logs named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.training.curves import (
    CurveLogError,
    curves_figure,
    find_training_logs,
    plot_training_curves,
    read_training_log,
    write_training_log,
)

runner = CliRunner()
# the header glioseg train writes (artifacts of training.trainer._end_epoch); validation every 2 epochs
TRAINER_LOG = ("epoch,step,lr,train_loss,seconds,dice_WT,dice_TC,dice_ET,dice_mean\n"
               "0,3,0.01,0.9,1.0,,,,\n"
               "1,6,0.005,0.7,2.0,0.5,0.4,0.3,0.4\n"
               "2,9,0.002,0.6,3.0,,,,\n"
               "3,12,0.001,0.5,4.0,0.8,0.7,0.6,0.7\n")


def panel_lines(fig, title):
    """``{label: (x, y)}`` of the lines in the panel called ``title``."""
    ax = next(a for a in fig.axes if a.get_title() == title)
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_trainer_columns_give_validation_dice_lines(tmp_path):
    (tmp_path / "log.csv").write_text(TRAINER_LOG)
    fig = curves_figure({"main": read_training_log(tmp_path / "log.csv")})
    dice = panel_lines(fig, "validation Dice")
    assert list(dice) == ["dice_WT", "dice_TC", "dice_ET", "dice_mean"]
    assert dice["dice_WT"] == ([1, 3], [0.5, 0.8])  # the validated epochs, joined
    assert dice["dice_ET"] == ([1, 3], [0.3, 0.6])
    assert panel_lines(fig, "loss")["train_loss"] == ([0, 1, 2, 3], [0.9, 0.7, 0.6, 0.5])
    assert panel_lines(fig, "learning rate")["lr"][1] == [0.01, 0.005, 0.002, 0.001]


def test_log_without_validation_still_plots_loss_and_lr(tmp_path):
    (tmp_path / "log.csv").write_text("epoch,step,lr,train_loss\n0,1,0.01,0.9\n1,2,0.005,0.7\n")
    fig = curves_figure({"main": read_training_log(tmp_path / "log.csv")})
    assert [a.get_title() for a in fig.axes] == ["loss", "learning rate"]
    assert panel_lines(fig, "loss")["train_loss"][1] == [0.9, 0.7]
    assert Image.open(plot_training_curves(tmp_path / "log.csv")).format == "PNG"


def test_trainer_history_writes_log_and_the_same_curve(tmp_path):
    history = [{"epoch": 0, "lr": 0.01, "train_loss": 0.9},
               {"epoch": 1, "lr": 0.005, "train_loss": 0.7, "dice_WT": 0.5, "dice_mean": 0.4}]
    write_training_log(tmp_path, history)
    assert Image.open(tmp_path / "curve.png").format == "PNG"
    log = read_training_log(tmp_path / "log.csv")
    assert np.isnan(log["dice_WT"][0]) and log["dice_WT"][1] == 0.5
    assert panel_lines(curves_figure({"main": log}), "validation Dice")["dice_WT"] == ([1], [0.5])


def test_run_directory_logs_and_cli(tmp_path):
    run = tmp_path / "run"
    for stage in ("low", "high"):
        (run / stage).mkdir(parents=True)
        (run / stage / "log.csv").write_text(TRAINER_LOG)
    (run / "other.csv").write_text("a,b\n1,2\n")
    (run / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert find_training_logs(run) == [run / "high" / "log.csv", run / "low" / "log.csv"]
    result = runner.invoke(app, ["plot-curves", str(run), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "c.png").format == "PNG"
    empty = runner.invoke(app, ["plot-curves", str(tmp_path / "missing")])
    assert empty.exit_code == 1 and "no CSV training log" in empty.output


@pytest.mark.parametrize("text,match", [
    ("epoch,train_loss\n0,0.9\n1,abc\n", r"line 3: column 'train_loss' holds 'abc', not a number"),
    ("epoch,train_loss\n0,0.9,7\n", r"line 2 has 3 cells but the header has 2"),
    ("epoch,train_loss\n,0.9\n", r"line 2: column 'epoch' needs a number"),
    ("epoch,train_loss\n", r"at least one row"),
    ("a,b\n1,2\n", r"not a training log"),
])
def test_malformed_log_is_one_line_error_naming_the_file(tmp_path, text, match):
    path = tmp_path / "log.csv"
    path.write_text(text)
    with pytest.raises(CurveLogError, match=match) as info:
        plot_training_curves(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    result = runner.invoke(app, ["plot-curves", str(path)])
    assert result.exit_code == 1 and str(path) in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_undecodable_log_is_named(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"epoch,train_loss\n0,\xff\xfe\n")
    with pytest.raises(CurveLogError, match=r"log\.csv: cannot read the training log \(UnicodeDecodeError"):
        read_training_log(path)
