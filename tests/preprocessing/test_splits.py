"""Tests for glioseg.preprocessing.splits: patient grouping, stratification, determinism, errors, CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.preprocessing.splits import (
    SplitError,
    get_fold,
    load_splits,
    make_splits,
    read_grades,
    read_patient_mapping,
    save_splits,
)

META = Path(__file__).resolve().parents[3] / "shared/data/meta"

MAPPING_CSV = """Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2020_subject_ID
HGG,Brats17_A_1,Brats18_A_1,TCGA-01,BraTS20_Training_001
HGG,Brats17_B_1,Brats18_B_1,NA,BraTS20_Training_002
LGG,Brats17_C_1,Brats18_C_1,TCGA-03,BraTS20_Training_003
LGG,Brats17_D_1,Brats18_D_1,NA,BraTS20_Training_004
HGG,Brats17_E_1,Brats18_E_1,NA,BraTS20_Training_005
HGG,Brats17_F_1,Brats18_F_1,NA,BraTS20_Training_006
"""


@pytest.fixture
def mapping_csv(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.csv"
    path.write_text(MAPPING_CSV)
    return path


def check_partition(result: dict, case_ids: list[str]) -> None:
    """Every fold covers all cases once, and val sets of k-fold are disjoint."""
    for s in result["splits"]:
        assert sorted(s["train"] + s["val"]) == sorted(case_ids)
        assert not set(s["train"]) & set(s["val"])


def test_kfold_partitions_cases_and_is_seeded():
    ids = [f"case{i:02d}" for i in range(23)]
    result = make_splits(ids, folds=5, seed=3)
    check_partition(result, ids)
    vals = [c for s in result["splits"] for c in s["val"]]
    assert sorted(vals) == sorted(ids)  # each case validated exactly once
    assert sorted(len(s["val"]) for s in result["splits"]) == [4, 4, 5, 5, 5]
    assert make_splits(ids, folds=5, seed=3) == result
    assert make_splits(ids, folds=5, seed=4)["splits"] != result["splits"]


def test_same_patient_never_on_both_sides(mapping_csv):
    # the same patients under their 2018 and 2020 names, as when two releases are combined
    ids = [f"Brats18_{x}_1" for x in "ABCDEF"] + ["BraTS20_Training_001", "BraTS20_Training_004"]
    result = make_splits(ids, folds=3, seed=0, mapping_csv=mapping_csv)
    check_partition(result, ids)
    assert result["n_patients"] == 6
    for s in result["splits"]:
        for left, right in (("Brats18_A_1", "BraTS20_Training_001"), ("Brats18_D_1", "BraTS20_Training_004")):
            assert (left in s["val"]) == (right in s["val"])


def test_mapping_merges_rows_sharing_an_id(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("A_ID,B_ID\nx1,y1\ny1,z1\nq,NA\n")
    mapping = read_patient_mapping(path)
    assert mapping["x1"] == mapping["y1"] == mapping["z1"]
    assert mapping["q"] != mapping["x1"]


def test_stratified_by_grade(mapping_csv, tmp_path):
    ids = [f"c{i:02d}" for i in range(20)]
    grades = {c: ("LGG" if i < 6 else "HGG") for i, c in enumerate(ids)}
    result = make_splits(ids, folds=3, seed=1, grades=grades)
    per_fold = [Counter(grades[c] for c in s["val"]) for s in result["splits"]]
    assert sorted(f["LGG"] for f in per_fold) == [2, 2, 2]
    assert sorted(f["HGG"] for f in per_fold) == [4, 5, 5]
    # grades given under another release's names reach the case through the mapping
    grade_csv = tmp_path / "grade.csv"
    grade_csv.write_text("BraTS18ID,Grade\nBrats18_C_1,LGG\nBrats18_A_1,HGG\n")
    out = make_splits(["BraTS20_Training_003", "BraTS20_Training_001"], folds=2, mapping_csv=mapping_csv,
                      grades=grade_csv)
    assert out["grades"] == {"BraTS20_Training_003": "LGG", "BraTS20_Training_001": "HGG"}


def test_train_val_single_split():
    ids = [f"c{i}" for i in range(10)]
    result = make_splits(ids, folds=1, seed=0, val_fraction=0.2)
    assert len(result["splits"]) == 1
    check_partition(result, ids)
    assert len(result["splits"][0]["val"]) == 2


def test_bad_inputs(tmp_path):
    with pytest.raises(SplitError, match="no cases"):
        make_splits([], folds=2)
    with pytest.raises(SplitError, match="at least 5 patients"):
        make_splits(["a", "b", "c"], folds=5)
    with pytest.raises(SplitError, match="duplicate"):
        make_splits(["a", "a", "b"], folds=2)
    with pytest.raises(SplitError, match="folds must be"):
        make_splits(["a", "b"], folds=0)
    with pytest.raises(SplitError, match="val_fraction"):
        make_splits(["a", "b"], folds=1, val_fraction=1.5)
    bad = tmp_path / "nogrades.csv"
    bad.write_text("BraTS18ID,Other\nx,1\n")
    with pytest.raises(SplitError, match="Grade"):
        read_grades(bad)
    with pytest.raises(SplitError, match="cannot read"):
        read_patient_mapping(tmp_path / "absent.csv")


def test_save_load_and_corrupt_files(tmp_path):
    result = make_splits([f"c{i}" for i in range(6)], folds=3)
    path = save_splits(result, tmp_path / "splits.json")
    assert load_splits(path) == json.loads(json.dumps(result))
    train, val = get_fold(load_splits(path), 2)
    assert len(train) == 4 and len(val) == 2
    with pytest.raises(SplitError, match=r"folds 0\.\.2"):
        get_fold(result, 3)
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(SplitError, match="not valid JSON"):
        load_splits(tmp_path / "bad.json")
    overlap = {"splits": [{"fold": 0, "train": ["a", "b"], "val": ["b"]}]}
    (tmp_path / "overlap.json").write_text(json.dumps(overlap))
    with pytest.raises(SplitError, match=r"both sides.*b"):
        load_splits(tmp_path / "overlap.json")
    with pytest.raises(SplitError, match="not found"):
        load_splits(tmp_path / "absent.json")


def test_cli_split(tmp_path, mapping_csv):
    pre = tmp_path / "pre"
    for x in "ABCDEF":
        (pre / f"Brats18_{x}_1").mkdir(parents=True)
        (pre / f"Brats18_{x}_1" / "meta.json").write_text("{}")
        (pre / f"Brats18_{x}_1" / "image.npy").write_bytes(b"")
    res = CliRunner().invoke(app, ["split", str(pre), "--folds", "3", "--seed", "1", "--mapping", str(mapping_csv),
                                   "--grades", str(mapping_csv)])
    assert res.exit_code == 0, res.output
    data = load_splits(pre / "splits.json")
    assert data["stratified"] and len(data["splits"]) == 3
    res = CliRunner().invoke(app, ["split", str(tmp_path / "absent"), "--folds", "3"])
    assert res.exit_code == 1 and "not a folder" in res.output


@pytest.mark.realdata
def test_shared_tables_group_the_shared_cases():
    if not (META / "brats2020_name_mapping.csv").is_file():
        pytest.skip(f"shared tables not found in {META}")
    ids = sorted(p.name for p in (META.parent / "brats18").iterdir() if p.is_dir())
    result = make_splits(ids, folds=5, seed=0, mapping_csv=META / "brats2020_name_mapping.csv",
                         grades=META / "brats2018_grade.csv")
    check_partition(result, ids)
    assert set(result["grades"].values()) == {"HGG", "LGG"}  # all 24 found in the grade table
    lgg_per_fold = [sum(result["grades"][c] == "LGG" for c in s["val"]) for s in result["splits"]]
    assert max(lgg_per_fold) - min(lgg_per_fold) <= 1
