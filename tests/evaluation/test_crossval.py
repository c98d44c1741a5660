"""Cross-validation: each case predicted by the fold that held it out, the table, and the refusals."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from glioseg.config import ModelConfig, StageConfig, TrainConfig
from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.data.synthetic import write_synthetic_dataset
from glioseg.evaluation.crossval import fold_manifest, predict_crossval, read_record
from glioseg.evaluation.crossval_folds import CrossValError, assign_cases, find_fold_runs
from glioseg.evaluation.crossval_report import (
    CaseRow,
    build_table,
    institution_group,
    render_markdown,
    score_crossval,
    write_table,
)
from glioseg.inference.predictor import Predictor
from glioseg.labels import get_scheme
from glioseg.preprocessing.cache import preprocess_dataset
from glioseg.preprocessing.splits import make_splits, save_splits
from glioseg.training.trainer import fit

# dataset folder A holds the first three, folder B the last: one case per institution group
IDS = ("Brats18_2013_5_1", "Brats18_CBICA_AAB_1", "Brats18_TCIA01_101_1", "patient7")
OPTIONS = {"device": "cpu", "precision": "fp32"}


def tiny_config(seed: int) -> TrainConfig:
    stage = StageConfig(name="main", patch_size=(32, 32, 32), batch_size=1, model=ModelConfig(base_filters=4, depth=3),
                        epochs=1, iterations=1, val_every=1)
    return TrainConfig(preset="test", stages=(stage,), device="cpu", deterministic=True, seed=seed, threads=1)


def rename_case(root: Path, old: str, new: str) -> None:
    folder = root / old
    for path in folder.iterdir():
        path.rename(folder / path.name.replace(old, new))
    folder.rename(root / new)


def write_datasets(base: Path) -> tuple[Path, Path]:
    """Folders A (3 cases) and B (1 case) of 32^3 phantoms, with the IDs of :data:`IDS`."""
    a, b = base / "A", base / "B"
    write_synthetic_dataset(a, 4, shape=(32, 32, 32), seed=1)
    for i, new in enumerate(IDS):
        rename_case(a, f"Brats18_SYN_{i:03d}_1", new)
    b.mkdir()
    shutil.move(str(a / IDS[3]), str(b / IDS[3]))
    return a, b


def train_folds(base: Path, roots: tuple[Path, Path]) -> Path:
    """Two fold runs, trained one iteration each from different seeds (so that their predictions differ)."""
    pre, cv_root = base / "pre", base / "cv"
    cases = [c for r in roots for c in find_cases(r)]
    assert not preprocess_dataset(cases, pre).failed
    splits = make_splits([c.case_id for c in cases], folds=2, seed=0)
    save_splits(splits, cv_root / "splits.json")
    for k in range(2):
        fit(tiny_config(seed=10 + k), pre, cv_root / f"fold_{k}", fold=k, splits_path=cv_root / "splits.json",
            show_progress=False)
    return cv_root


@pytest.fixture(scope="module")
def cv_setup(tmp_path_factory) -> tuple[Path, tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("cv")
    roots = write_datasets(base)
    return train_folds(base, roots), roots


@pytest.fixture(scope="module")
def predicted(cv_setup, tmp_path_factory) -> Path:
    cv_root, roots = cv_setup
    out = tmp_path_factory.mktemp("oof") / "out"
    results = predict_crossval(cv_root, roots, out, **OPTIONS)
    assert [r.outcome.status for r in results] == ["done"] * len(IDS)
    return out


def val_fold(cv_root: Path) -> dict[str, int]:
    """Case -> the fold whose run.json lists it as validation (what the folds really held out)."""
    found = {}
    for k in range(2):
        for case_id in json.loads((cv_root / f"fold_{k}" / "run.json").read_text())["split"]["val"]:
            found[case_id] = k
    return found


def copy_cv(cv_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "cv"
    shutil.copytree(cv_root, copy)
    return copy


# ----------------------------------------------------------------------------- predicting


def test_each_case_is_predicted_by_the_fold_that_held_it_out(cv_setup, predicted):
    cv_root, roots = cv_setup
    truth = val_fold(cv_root)
    assert sorted(truth) == sorted(IDS) and set(truth.values()) == {0, 1}
    assert read_record(predicted)["cases"] == truth
    for k in range(2):
        lines = [json.loads(line) for line in fold_manifest(predicted, k).read_text().splitlines()]
        assert sorted(line["id"] for line in lines) == sorted(c for c, f in truth.items() if f == k)
        assert all(line["status"] == "done" for line in lines)
    models = {k: Predictor.from_run(cv_root / f"fold_{k}", **OPTIONS) for k in range(2)}
    differ = 0
    for files in [c for r in roots for c in find_cases(r)]:
        case = read_case(files, read_label=False)
        written = case.geometry.to_canonical(np.asarray(nib.load(predicted / f"{files.case_id}.nii.gz").dataobj))
        written = get_scheme("brats2017").to_canonical(written)
        own, other = (models[k].predict_case(case).labels for k in (truth[files.case_id], 1 - truth[files.case_id]))
        np.testing.assert_array_equal(written, own)
        differ += not np.array_equal(own, other)
    assert differ > 0  # the folds' models differ, so the check above tells them apart


def test_second_run_resumes_and_skips_written_cases(cv_setup, predicted, tmp_path):
    cv_root, roots = cv_setup
    out = tmp_path / "out"
    shutil.copytree(predicted, out)
    (out / f"{IDS[1]}.nii.gz").unlink()
    stamp = (out / f"{IDS[0]}.nii.gz").stat().st_mtime_ns
    results = predict_crossval(cv_root, roots, out, **OPTIONS)
    status = {r.outcome.case_id: r.outcome.status for r in results}
    assert status == {**dict.fromkeys(IDS, "skipped"), IDS[1]: "done"}
    assert (out / f"{IDS[0]}.nii.gz").stat().st_mtime_ns == stamp


def test_output_of_another_cross_validation_is_refused(cv_setup, predicted, tmp_path):
    cv_root, roots = cv_setup
    out = tmp_path / "out"
    shutil.copytree(predicted, out)
    with pytest.raises(CrossValError, match=r"another cross-validation \(the options"):
        predict_crossval(cv_root, roots, out, **{**OPTIONS, "tta": "all"})
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in predicted.iterdir())


def test_a_bad_case_is_isolated_and_the_others_predicted(cv_setup, tmp_path):
    cv_root, roots = cv_setup
    a = tmp_path / "A"
    shutil.copytree(roots[0], a)
    (a / IDS[0] / f"{IDS[0]}_t2.nii.gz").write_bytes(b"not a nifti")
    results = predict_crossval(cv_root, [a, roots[1]], tmp_path / "out", **OPTIONS)
    status = {r.outcome.case_id: r.outcome.status for r in results}
    assert status == {**dict.fromkeys(IDS, "done"), IDS[0]: "failed"}
    assert not (tmp_path / "out" / f"{IDS[0]}.nii.gz").exists()


def test_missing_fold_is_refused(cv_setup, tmp_path):
    cv = copy_cv(cv_setup[0], tmp_path)
    shutil.rmtree(cv / "fold_1")
    with pytest.raises(CrossValError, match=r"fold_1 missing \(the splits have 2 folds"):
        find_fold_runs(cv)
    with pytest.raises(CrossValError, match="no fold_<k>/ run folders"):
        find_fold_runs(tmp_path)


def test_unfinished_fold_is_refused_unless_allowed(cv_setup, tmp_path):
    cv = copy_cv(cv_setup[0], tmp_path)
    info_path = cv / "fold_0" / "run.json"
    info = json.loads(info_path.read_text())
    info["stages"]["main"]["epochs"] = 5
    info_path.write_text(json.dumps(info))
    with pytest.raises(CrossValError, match=r"fold 0: .* is unfinished \(main 1/5 epochs\)"):
        find_fold_runs(cv)
    assert find_fold_runs(cv, allow_unfinished=True)[0].unfinished == ("main 1/5 epochs",)
    (cv / "fold_1" / "run.json").unlink()
    with pytest.raises(CrossValError, match=r"fold 1: .* \(run.json or config.yaml missing\)"):
        find_fold_runs(cv, allow_unfinished=True)


def test_fold_without_weights_is_refused(cv_setup, tmp_path):
    cv = copy_cv(cv_setup[0], tmp_path)
    (cv / "fold_1" / "main" / "model.safetensors").unlink()
    with pytest.raises(CrossValError, match=r"fold 1: .* no trained stage"):
        find_fold_runs(cv)


def _set_val(cv: Path, fold: int, val: list[str]) -> None:
    path = cv / f"fold_{fold}" / "run.json"
    info = json.loads(path.read_text())
    info["split"]["val"] = val
    info["split"]["train"] = [c for c in info["split"]["train"] if c not in val]
    path.write_text(json.dumps(info))


def test_case_in_two_validation_sets_or_none_is_refused(cv_setup, tmp_path):
    cv = copy_cv(cv_setup[0], tmp_path)
    truth = val_fold(cv)
    zero = [c for c, f in truth.items() if f == 0]
    one = [c for c, f in truth.items() if f == 1]
    _set_val(cv, 1, [*one, zero[0]])
    with pytest.raises(CrossValError, match=rf"case {zero[0]} is in the validation sets of folds \[0, 1\]"):
        assign_cases(IDS, find_fold_runs(cv))
    _set_val(cv, 1, one[1:])
    with pytest.raises(CrossValError, match=rf"case {one[0]} is in no fold's validation set"):
        assign_cases(IDS, find_fold_runs(cv))
    with pytest.raises(CrossValError, match=rf"case {one[0]} is in no fold's validation set"):
        predict_crossval(cv, cv_setup[1], tmp_path / "out", **OPTIONS)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_validation_case_missing_from_the_dataset_is_refused(cv_setup, tmp_path):
    runs = find_fold_runs(cv_setup[0])
    with pytest.raises(CrossValError, match=r"case patient7: fold \d validated on it .* no dataset folder holds it"):
        assign_cases(IDS[:3], runs)


def test_case_trained_and_validated_by_one_fold_is_refused(cv_setup):
    run = find_fold_runs(cv_setup[0])[0]
    bad = replace(run, train=(*run.train, run.val[0]))
    with pytest.raises(CrossValError, match=f"case {run.val[0]}: fold 0 trained and validated on it"):
        assign_cases(IDS, [bad])


# ----------------------------------------------------------------------------- the table


def test_institution_groups():
    assert institution_group("Brats18_2013_11_1") == "2013"
    assert institution_group("Brats18_CBICA_AME_1") == "CBICA"
    assert institution_group("Brats18_TCIA01_201_1") == institution_group("Brats17_TCIA_201_1") == "TCIA"
    assert institution_group("BRATS19_cbica_AAB_1") == "CBICA"
    for other in ("BraTS20_Training_001", "BraTS-GLI-00001-000", "patient7", "Brats18_TCGA_1", "x_2013_1"):
        assert institution_group(other) == "other"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_table_equals_a_hand_computation_from_the_case_csv(cv_setup, predicted, tmp_path):
    cv_root, roots = cv_setup
    grades = tmp_path / "grades.csv"
    grades.write_text(f"BraTS18ID,Grade\n{IDS[0]},LGG\n{IDS[1]},HGG\n{IDS[2]},HGG\n")
    scores = score_crossval(predicted, roots, grades)
    assert scores.evaluation.summary["provenance"]["protocol"] == "brats2021"  # kept over the merged folders
    table = build_table(scores.rows, with_grades=True)
    paths = write_table(scores, table, tmp_path / "report")
    cases = _read_csv(paths["cv_cases.csv"])
    assert [c["case_id"] for c in cases] == sorted(IDS)
    assert {c["case_id"]: int(c["fold"]) for c in cases} == val_fold(cv_root)
    assert [c["institution"] for c in cases if c["case_id"] in IDS] == ["2013", "CBICA", "TCIA", "other"]
    assert [c["grade"] for c in cases] == ["LGG", "HGG", "HGG", "unknown"]
    rows = {(r["section"], r["group"]): r for r in _read_csv(paths["cv_table.csv"])}
    for region in ("WT", "TC", "ET"):
        dice = [float(c[f"dice_{region}"]) for c in cases]
        overall = rows[("all", "all")]
        assert float(overall[f"{region}_mean"]) == pytest.approx(sum(dice) / len(dice), abs=1e-12)
        assert float(overall[f"{region}_sd"]) == pytest.approx(statistics.stdev(dice), abs=1e-12)
        assert float(overall[f"{region}_median"]) == pytest.approx(statistics.median(dice), abs=1e-12)
        assert float(overall[f"{region}_min"]) == min(dice)
        hgg = [float(c[f"dice_{region}"]) for c in cases if c["grade"] == "HGG"]
        assert float(rows[("grade", "HGG")][f"{region}_mean"]) == pytest.approx(sum(hgg) / 2, abs=1e-12)
        for c in cases:
            group = rows[("institution", c["institution"])]
            assert group["n"] == "1" and float(group[f"{region}_mean"]) == float(c[f"dice_{region}"])
    low = sorted(c["case_id"] for c in cases if float(c["dice_WT"]) < 0.6)
    assert int(rows[("all", "all")]["n_wt_below_0.6"]) == len(low)
    assert sorted(c["case_id"] for c in table["low_wt"]) == low
    document = json.loads(paths["cv_table.json"].read_text())
    assert document["table"]["n_cases"] == len(IDS) and len(document["cases"]) == len(IDS)
    assert paths["cv_table.md"].read_text() == render_markdown(table)


def _row(case_id: str, fold: int, wt: float, tc: float = 0.5, et: float = 0.5, grade: str = "unknown",
         status: str = "ok") -> CaseRow:
    return CaseRow(case_id, fold, institution_group(case_id), grade, status, {"WT": wt, "TC": tc, "ET": et})


def test_build_table_by_hand():
    rows = [_row("Brats18_2013_1_1", 0, 0.9), _row("Brats18_2013_2_1", 1, 0.5, status="missing"),
            _row("Brats18_CBICA_AAA_1", 0, 0.8), _row("Brats18_TCIA02_1_1", 1, 0.3), _row("p1", 1, 0.7)]
    table = build_table(rows)
    by = {(r["section"], r["group"]): r for r in table["rows"]}
    wt = by[("all", "all")]["regions"]["WT"]
    assert wt["n"] == 5 and wt["mean"] == pytest.approx(0.64) and wt["median"] == pytest.approx(0.7)
    assert wt["min"] == 0.3 and wt["sd"] == pytest.approx(math.sqrt(0.232 / 4))  # squares .0676+.0196+.0256+.1156+.0036
    assert by[("institution", "2013")]["regions"]["WT"]["mean"] == pytest.approx(0.7)
    assert by[("institution", "2013")]["n_wt_below"] == 1
    assert by[("institution", "other")]["n"] == 1
    assert by[("fold", "1")]["regions"]["WT"]["mean"] == pytest.approx(0.5)
    assert [c["case_id"] for c in table["low_wt"]] == ["Brats18_TCIA02_1_1", "Brats18_2013_2_1"]  # worst first
    assert table["failed"] == ["Brats18_2013_2_1"]
    assert not any(r["section"] == "grade" for r in table["rows"])
    text = render_markdown(table)
    assert "| WT | 5 | 0.640 | 0.241 | 0.700 | 0.300 |" in text
    assert "Cases with WT Dice < 0.6: 2 of 5: Brats18_TCIA02_1_1 (0.300, fold 1), Brats18_2013_2_1" in text
    single = build_table([_row("Brats18_CBICA_AAA_1", 0, 0.8)])
    assert math.isnan(single["rows"][0]["regions"]["WT"]["sd"])  # one case: no sample sd
    assert by_group(single, "TCIA")["n"] == 0 and math.isnan(by_group(single, "TCIA")["regions"]["WT"]["mean"])


def by_group(table: dict, group: str) -> dict:
    return next(r for r in table["rows"] if r["section"] == "institution" and r["group"] == group)


def test_report_refuses_a_prediction_not_written_by_its_fold(cv_setup, predicted, tmp_path):
    cv_root, roots = cv_setup
    out = tmp_path / "out"
    shutil.copytree(predicted, out)
    swapped = {c for c, f in val_fold(cv_root).items() if f == 0}
    victim = sorted(swapped)[0]
    img = nib.load(out / f"{victim}.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine, img.header), out / f"{victim}.nii.gz")
    with pytest.raises(CrossValError, match=rf"case {victim}: .* changed after fold 0 wrote it"):
        score_crossval(out, roots)
    (out / "cv.json").unlink()
    with pytest.raises(CrossValError, match=r"cv\.json missing"):
        score_crossval(out, roots)


def test_report_scores_a_missing_prediction_as_zero_and_refuses_other_datasets(cv_setup, predicted, tmp_path):
    roots = cv_setup[1]
    out = tmp_path / "out"
    shutil.copytree(predicted, out)
    (out / f"{IDS[2]}.nii.gz").unlink()
    scores = score_crossval(out, roots)
    row = next(r for r in scores.rows if r.case_id == IDS[2])
    assert row.status == "missing" and row.dice == {"WT": 0.0, "TC": 0.0, "ET": 0.0}
    assert build_table(scores.rows)["failed"] == [IDS[2]]
    with pytest.raises(CrossValError, match=rf"case {IDS[3]} .* has no ground truth in the dataset folders"):
        score_crossval(out, roots[:1])


def test_some_folds_give_a_partial_table_of_their_cases(cv_setup, tmp_path):
    cv = copy_cv(cv_setup[0], tmp_path)
    roots = cv_setup[1]
    shutil.rmtree(cv / "fold_0")  # not trained yet: fold 1 alone can be scored
    one = sorted(c for c, f in val_fold(cv_setup[0]).items() if f == 1)
    out = tmp_path / "out"
    results = predict_crossval(cv, roots, out, folds=[1], **OPTIONS)
    assert sorted(r.outcome.case_id for r in results) == one and {r.fold for r in results} == {1}
    record = read_record(out)
    assert record["partial"] and record["dataset_cases"] == len(IDS) and sorted(record["cases"]) == one
    scores = score_crossval(out, roots)
    assert sorted(r.case_id for r in scores.rows) == one and all(r.status == "ok" for r in scores.rows)
    table = build_table(scores.rows, dataset_cases=record["dataset_cases"])
    assert table["partial"] and table["n_cases"] == len(one)
    assert f"{len(one)} of {len(IDS)} cases (a partial table: only folds 1)" in render_markdown(table)
    with pytest.raises(CrossValError, match=r"fold_0 missing"):
        find_fold_runs(cv)
    with pytest.raises(CrossValError, match=r"fold 2 asked for, but the splits have folds 0\.\.1"):
        find_fold_runs(cv, folds=[2])
