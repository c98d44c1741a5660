"""Tests for glioseg.preprocessing.splits: patient grouping, stratification, determinism, errors, CLI."""

from __future__ import annotations

import csv
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


# the brats2021_name_mapping.csv layout: release columns, N/A for new patients, a site's "Local ID\xa0"
MAPPING_2021_CSV = ("BraTS2021,BraTS2020,BraTS2019,BraTS2018,BraTS2017,Cohort Name (if publicly available),"
                    "Site No (represents the originating institution),Local ID\xa0\n"
                    "BraTS2021_00001,BraTS20_Training_001,BraTS19_A_1,Brats18_A_1,Brats17_A_1,TCGA-GBM,5,TCGA-01\n"
                    "BraTS2021_00002,BraTS20_Training_002,N/A,N/A,N/A,IvyGAP,16,W1\n"
                    "BraTS2021_00003,N/A,N/A,N/A,N/A,ACRIN,19,A-3\n")


@pytest.fixture
def mapping_2021_csv(tmp_path: Path) -> Path:
    path = tmp_path / "brats2021_name_mapping.csv"
    path.write_text(MAPPING_2021_CSV)
    return path


def test_2021_layout_maps_every_release_to_one_patient(mapping_2021_csv):
    mapping = read_patient_mapping(mapping_2021_csv)
    assert {mapping[i] for i in ("BraTS2021_00001", "BraTS20_Training_001", "BraTS19_A_1", "Brats18_A_1",
                                 "Brats17_A_1")} == {"BraTS2021_00001"}
    assert mapping["BraTS20_Training_002"] == "BraTS2021_00002" and mapping["BraTS2021_00003"] == "BraTS2021_00003"
    assert "N/A" not in mapping and "TCGA-01" not in mapping and "W1" not in mapping  # site IDs are not aliases


def test_several_tables_chain_releases_into_one_patient(mapping_csv, mapping_2021_csv):
    # BraTS2021_00002 reaches Brats18_B_1 only through both tables: 2021 -> BraTS20_Training_002 -> 2018
    ids = ["Brats18_A_1", "Brats18_B_1", "Brats18_C_1", "Brats18_D_1", "BraTS2021_00001", "BraTS2021_00002",
           "BraTS2021_00003"]
    alone = make_splits(ids, folds=2, mapping_csv=mapping_2021_csv)
    assert alone["n_patients"] == 6
    both = make_splits(ids, folds=2, mapping_csv=[mapping_2021_csv, mapping_csv])
    assert both["n_patients"] == 5 and both["mapping_files"] == [str(mapping_2021_csv), str(mapping_csv)]
    assert both["patients"]["Brats18_B_1"] == both["patients"]["BraTS2021_00002"]
    for seed in range(8):
        result = make_splits(ids, folds=3, seed=seed, mapping_csv=[mapping_csv, mapping_2021_csv])
        check_partition(result, ids)
        for s in result["splits"]:
            for left, right in (("Brats18_A_1", "BraTS2021_00001"), ("Brats18_B_1", "BraTS2021_00002")):
                assert (left in s["val"]) == (right in s["val"]), (seed, s)


@pytest.mark.parametrize("header", ["Grade,Name\n", "BraTS18ID,Grade\n", "BraTS2021,Cohort\n"])
def test_table_that_is_not_a_mapping_is_refused(tmp_path, header):
    path = tmp_path / "bad.csv"
    path.write_text(header + "x,y\n")
    with pytest.raises(SplitError, match=r"bad\.csv: not a patient ID mapping.*brats2021_name_mapping\.csv layout"):
        read_patient_mapping(path)


def fake_cache(root: Path, ids: list[str]) -> Path:
    """A folder that list_preprocessed reads as a cache of ``ids`` (split needs no arrays)."""
    for case_id in ids:
        (root / case_id).mkdir(parents=True)
        (root / case_id / "meta.json").write_text("{}")
        (root / case_id / "image.npy").write_bytes(b"")
    return root


def test_cli_split_with_two_mappings_and_a_bad_one(tmp_path, mapping_csv, mapping_2021_csv):
    pre = fake_cache(tmp_path / "pre", ["Brats18_A_1", "Brats18_B_1", "Brats18_C_1", "BraTS2021_00001",
                                        "BraTS2021_00002", "BraTS2021_00003"])
    res = CliRunner().invoke(app, ["split", str(pre), "--folds", "2", "--mapping", str(mapping_2021_csv),
                                   "--mapping", str(mapping_csv)])
    assert res.exit_code == 0, res.output
    assert "6 cases, 4 patients" in res.output
    bad = tmp_path / "cohort.csv"
    bad.write_text("Case,Cohort\nBrats18_A_1,TCGA\n")
    res = CliRunner().invoke(app, ["split", str(pre), "--mapping", str(mapping_csv), "--mapping", str(bad),
                                   "-o", str(tmp_path / "new.json")])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "columns ['Case', 'Cohort']" in lines[0], res.output
    assert "BraTS_2018_subject_ID" in lines[0] and "BraTS2021,BraTS2020" in lines[0]
    assert not (tmp_path / "new.json").exists()


@pytest.mark.realdata
def test_shared_2021_and_2020_tables_group_31_patients_across_releases(tmp_path):
    tables = [META / "brats2021_name_mapping.csv", META / "brats2020_name_mapping.csv"]
    if not all(t.is_file() for t in tables) or not (META.parent / "brats18_extra").is_dir():
        pytest.skip(f"shared tables or data not found in {META.parent}")
    ids = sorted(p.name for d in ("brats18", "brats18_extra") for p in (META.parent / d).iterdir() if p.is_dir())
    assert len(ids) == 31
    # each patient once more under its BraTS 2021 name, as when a 2021 copy joins the 2018 cases
    rows = {r["BraTS2018"]: r["BraTS2021"] for r in csv.DictReader(tables[0].open())}
    aliases = {c: rows[c] for c in ids}
    pre = fake_cache(tmp_path / "pre", ids + list(aliases.values()))
    args = ["split", str(pre), "--folds", "5", "--grades", str(META / "brats2018_grade.csv")]
    res = CliRunner().invoke(app, [*args, "--mapping", str(tables[0]), "--mapping", str(tables[1])])
    assert res.exit_code == 0, res.output
    data = load_splits(pre / "splits.json")
    assert data["n_cases"] == 62 and data["n_patients"] == 31
    assert Counter(data["grades"].values()) == {"HGG": 54, "LGG": 8}  # the 2021 names get their grade too
    for s in data["splits"]:
        for case_id, alias in aliases.items():
            assert (case_id in s["val"]) == (alias in s["val"]), (s["fold"], case_id)
    assert [sum(data["grades"][c] == "LGG" for c in s["val"]) for s in data["splits"]].count(0) <= 1


def test_adding_a_table_keeps_the_earlier_tables_patients_and_splits(mapping_csv, mapping_2021_csv):
    ids = [f"Brats18_{x}_1" for x in "ABCDEF"]
    one = make_splits(ids, folds=3, seed=2, mapping_csv=mapping_csv)
    both = make_splits(ids, folds=3, seed=2, mapping_csv=[mapping_csv, mapping_2021_csv])
    assert both["patients"] == one["patients"] and both["patients"]["Brats18_A_1"] == "Brats17_A_1"
    assert both["splits"] == one["splits"]
    assert read_patient_mapping([mapping_2021_csv, mapping_csv])["Brats18_A_1"] == "BraTS2021_00001"
