"""On the shared BraTS 2018 cases: exact volumes of a real case, the clinical tables' coverage,
and the shipped models on real features. Skipped when ../shared/data is absent."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def shared() -> Path:
    if not (SHARED / "brats18").is_dir() or not (SHARED / "meta").is_dir():
        pytest.skip(f"real data not found at {SHARED}")
    return SHARED


def test_real_case_volumes_match_the_segmentation_file(shared):
    from glioseg.data.layouts import find_cases
    from glioseg.radiomics.dataset import extract_dataset, ground_truth_source

    case = find_cases(shared / "brats18")[0]
    row = extract_dataset([case], ground_truth_source())[0]
    assert row.error is None
    seg = np.asarray(nib.load(str(case.label)).dataobj)
    voxel_ml = float(np.prod(nib.load(str(case.label)).header.get_zooms()[:3])) / 1000
    assert row.values["vol_WT_ml"] == pytest.approx((seg > 0).sum() * voxel_ml)
    assert row.values["vol_ET_ml"] == pytest.approx((seg == 4).sum() * voxel_ml)
    assert row.values["vol_TC_ml"] == pytest.approx(np.isin(seg, (1, 4)).sum() * voxel_ml)
    assert 0 < row.values["shape_WT_sphericity"] < 1
    assert all(np.isfinite(list(row.values.values())))


def test_clinical_tables_cover_19_survival_and_31_grade_cases(shared):
    from glioseg.radiomics.clinical import read_grade_table, read_survival_table

    ids = sorted(p.name for folder in ("brats18", "brats18_extra") for p in (shared / folder).iterdir() if p.is_dir())
    survival = read_survival_table(shared / "meta" / "brats2018_survival_data.csv")
    grades = read_grade_table(shared / "meta" / "brats2018_grade.csv")
    assert len(ids) == 31
    assert sum(i in survival and survival[i].days is not None for i in ids) == 19
    assert all(i in grades for i in ids)
    assert sum(grades[i] == "LGG" for i in ids) == 4


def test_shipped_models_predict_on_real_features(shared):
    from glioseg.data.layouts import find_cases
    from glioseg.radiomics.dataset import extract_dataset, ground_truth_source
    from glioseg.radiomics.grade import predict_hgg
    from glioseg.radiomics.models_io import load_model, shipped_model_path
    from glioseg.radiomics.survival import predict_days

    lgg = [c for c in find_cases(shared / "brats18") if c.case_id == "Brats18_TCIA10_628_1"]
    row = extract_dataset(lgg, ground_truth_source())[0]
    grade = load_model(shipped_model_path("grade"), "grade")
    p = predict_hgg(grade, np.array([[row.values[n] for n in grade.inputs]]))[0]
    assert 0 <= p < 0.5  # an LGG the model trained on
    survival = load_model(shipped_model_path("survival"), "survival")
    values = {"age": 60.0, **row.values}
    assert predict_days(survival, np.array([[values[n] for n in survival.inputs]]))[0] > 0


@pytest.mark.slow
def test_the_shipped_models_are_what_the_recipe_fits(shared, tmp_path):
    """scripts/fit_radiomics.sh's steps on the 31 cases give the shipped model.json files exactly (~2 min)."""
    import json

    from glioseg.data.layouts import find_cases_in
    from glioseg.radiomics.dataset import extract_dataset, ground_truth_source
    from glioseg.radiomics.features import write_features_csv
    from glioseg.radiomics.fitting import fit_grade_folder, fit_survival_folder
    from glioseg.radiomics.models_io import shipped_model_path

    cases, _ = find_cases_in([shared / "brats18", shared / "brats18_extra"])
    features = write_features_csv(extract_dataset(cases, ground_truth_source()), tmp_path / "features_gt.csv")
    fit_survival_folder(features, shared / "meta" / "brats2018_survival_data.csv", tmp_path / "survival")
    fit_grade_folder(features, shared / "meta" / "brats2018_grade.csv", tmp_path / "grade")
    for task in ("survival", "grade"):
        shipped = json.loads(shipped_model_path(task).read_text())
        assert json.loads((tmp_path / task / "model.json").read_text()) == shipped, task
        table = shipped_model_path(task).parent / "cv_table.md"
        assert (tmp_path / task / "cv_table.md").read_text() == table.read_text()
