"""``glioseg preprocess DATA [DATA ...] OUT``: several dataset folders into one cache, with each
case's folder recorded, and a case ID in two folders refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases_in
from glioseg.data.naming import DatasetError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def copy_case(case_dir: Path, root: Path, new_id: str) -> Path:
    """Copy a BraTS 2017-21 case folder into ``root`` under another case ID (folder and file names)."""
    target = root / new_id
    target.mkdir(parents=True)
    for f in case_dir.iterdir():
        shutil.copy2(f, target / f.name.replace(case_dir.name, new_id))
    return target


@pytest.fixture
def two_datasets(make_synthetic_dataset, tmp_path) -> tuple[Path, Path]:
    """A: the 2 synthetic cases; B: one more case under its own ID (a copy renamed)."""
    a = make_synthetic_dataset(n_cases=2, shape=(24, 24, 24))
    b = tmp_path / "B"
    copy_case(a / "Brats18_SYN_000_1", b, "Brats18_EXTRA_7_1")
    return a, b


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_two_folders_make_one_cache_with_each_case_source(two_datasets, tmp_path):
    a, b = two_datasets
    out = tmp_path / "pre"
    res = invoke("preprocess", a, b, out)
    assert res.exit_code == 0, res.output
    assert "3 done" in res.output
    info = json.loads((out / "dataset.json").read_text())
    assert info["cases"] == ["Brats18_EXTRA_7_1", "Brats18_SYN_000_1", "Brats18_SYN_001_1"]
    assert info["datasets"] == sorted([str(a.absolute()), str(b.absolute())])
    assert info["case_datasets"] == {"Brats18_EXTRA_7_1": str(b.absolute()), "Brats18_SYN_000_1": str(a.absolute()),
                                     "Brats18_SYN_001_1": str(a.absolute())}
    assert json.loads((out / "Brats18_EXTRA_7_1" / "meta.json").read_text())["dataset"] == str(b.absolute())
    # again: up to date, nothing redone
    res = invoke("preprocess", a, b, out)
    assert res.exit_code == 0 and "0 done, 3 up to date" in res.output, res.output


def test_one_folder_form_is_unchanged(two_datasets, tmp_path):
    a, _ = two_datasets
    res = invoke("preprocess", a, tmp_path / "pre")
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "pre" / "dataset.json").read_text())
    assert info["cases"] == ["Brats18_SYN_000_1", "Brats18_SYN_001_1"] and info["datasets"] == [str(a.absolute())]


def test_out_is_required(two_datasets):
    res = invoke("preprocess", two_datasets[0])
    assert res.exit_code == 2 and "Missing argument" in res.output


def test_case_id_in_two_folders_is_refused_naming_both(two_datasets, tmp_path):
    a, b = two_datasets
    copy_case(a / "Brats18_SYN_001_1", b, "Brats18_SYN_001_1")  # a copy: still two sources of one ID
    out = tmp_path / "pre"
    res = invoke("preprocess", a, b, out)
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert "Brats18_SYN_001_1 is in two dataset folders" in lines[0]
    assert str(a / "Brats18_SYN_001_1") in lines[0] and str(b / "Brats18_SYN_001_1") in lines[0]
    assert "separate caches" in lines[0]
    assert not out.exists()  # refused before anything is written


def test_ids_equal_but_for_case_in_two_folders_are_refused(two_datasets, tmp_path):
    a, b = two_datasets
    copy_case(a / "Brats18_SYN_001_1", b, "BRATS18_SYN_001_1")
    with pytest.raises(DatasetError, match="differing only in case"):
        find_cases_in([a, b])


def test_the_same_files_reached_twice_count_once(two_datasets, tmp_path):
    a, b = two_datasets
    cases, sources = find_cases_in([a, b, a, a / "Brats18_SYN_000_1"])
    assert [c.case_id for c in cases] == ["Brats18_EXTRA_7_1", "Brats18_SYN_000_1", "Brats18_SYN_001_1"]
    assert sources["Brats18_SYN_000_1"] == a and sources["Brats18_EXTRA_7_1"] == b


def test_a_bad_folder_among_several_is_one_line(two_datasets, tmp_path):
    a, _ = two_datasets
    res = invoke("preprocess", a, tmp_path / "absent", tmp_path / "pre")
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [f"error: {tmp_path / 'absent'}: not a folder; give a dataset folder "
                                               "or a case folder"]
    with pytest.raises(DatasetError, match="no dataset folder"):
        find_cases_in([])


def test_out_inside_any_input_is_refused(two_datasets, tmp_path):
    a, b = two_datasets
    res = invoke("preprocess", a, b, b / "Brats18_EXTRA_7_1")
    assert res.exit_code == 1 and "holds the input" in res.output


@pytest.mark.realdata
def test_shared_folders_combine_into_31_cases():
    brats18, extra = SHARED / "brats18", SHARED / "brats18_extra"
    if not brats18.is_dir() or not extra.is_dir():
        pytest.skip(f"shared data not found in {SHARED}")
    cases, sources = find_cases_in([brats18, extra])
    assert len(cases) == 31 and len(set(sources.values())) == 2
    assert sum(s == extra for s in sources.values()) == 7
    assert all(len(c.images) == 4 and c.label is not None for c in cases)
    assert {c.case_id for c in cases if sources[c.case_id] == extra} == {
        *(f"Brats18_CBICA_{x}_1" for x in ("APY", "APZ", "AQO", "AQP", "ATD", "AVG")), "Brats18_TCIA05_396_1"}


@pytest.mark.realdata
def test_cli_hands_the_31_shared_cases_and_their_folders_to_the_cache(tmp_path, monkeypatch):
    import glioseg.preprocessing.cache as cache

    brats18, extra = SHARED / "brats18", SHARED / "brats18_extra"
    if not brats18.is_dir() or not extra.is_dir():
        pytest.skip(f"shared data not found in {SHARED}")
    seen = {}

    def record(cases, out, spacing, workers, scheme, force, on_result, datasets):
        seen.update(cases=[c.case_id for c in cases], datasets=dict(datasets), spacing=spacing, scheme=scheme)
        return cache.DatasetResult()

    monkeypatch.setattr(cache, "preprocess_dataset", record)  # discovery and wiring only: 31 cases take minutes
    res = invoke("preprocess", brats18, extra, tmp_path / "pre", "--spacing", "2", "--label-scheme", "brats2017")
    assert res.exit_code == 0, res.output
    assert len(seen["cases"]) == 31 and seen["spacing"] == 2.0 and seen["scheme"] == "brats2017"
    assert seen["datasets"]["Brats18_TCIA05_396_1"] == extra and seen["datasets"]["Brats18_2013_2_1"] == brats18
