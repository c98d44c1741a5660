"""Output paths: unusable ones are named in one line before any work starts."""

from __future__ import annotations

import os

import pytest
import typer

from glioseg.cli.paths import check_output_dir, check_output_file, output_dir_problem, output_file_problem


def test_usable_paths_pass(tmp_path):
    assert output_dir_problem(tmp_path) is None
    assert output_dir_problem(tmp_path / "new" / "deeper") is None
    assert output_file_problem(tmp_path / "new" / "report.json") is None


def test_existing_file_is_not_a_folder(tmp_path):
    f = tmp_path / "out"
    f.write_text("x")
    assert "is not a folder" in output_dir_problem(f)
    assert "cannot be created" in output_dir_problem(f / "sub")
    assert "is a folder" in output_file_problem(tmp_path)


def test_read_only_folder(tmp_path, monkeypatch):
    # a read-only mount answers os.access(W_OK) with False, for root too
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert "not writable" in output_dir_problem(tmp_path / "out")
    assert "not writable" in output_file_problem(tmp_path / "a.json")


def test_check_exits_with_one_line(tmp_path, capsys):
    f = tmp_path / "out"
    f.write_text("x")
    with pytest.raises(typer.Exit) as info:
        check_output_dir(f, "-o")
    assert info.value.exit_code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: -o: ") and "\n" not in err
    with pytest.raises(typer.Exit):
        check_output_file(tmp_path, "--json")
