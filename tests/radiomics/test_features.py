"""Features of whole cases: exact volumes, the normalisation of the preprocessing stage, world
orientation through the NIfTI reader, determinism, and the features CSV."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.layouts import find_cases
from glioseg.data.nifti import MODALITIES
from glioseg.radiomics.catalog import FEATURE_NAMES, FEATURES, feature_table_markdown
from glioseg.radiomics.dataset import extract_dataset, ground_truth_source
from glioseg.radiomics.errors import RadiomicsError
from glioseg.radiomics.features import case_features, read_features_csv, region_masks, write_features_csv

SPACING = (1.0, 1.0, 2.0)  # 2 mm^3 voxels


def _phantom(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 40x40x20 brain box with a tumour: 40 NCR, 100 ET and 500 ED voxels; random intensities."""
    rng = np.random.default_rng(seed)
    image = np.zeros((4, 40, 40, 20), dtype=np.float32)
    image[:, 5:35, 5:35, 2:18] = rng.normal(100, 10, size=(4, 30, 30, 16))
    labels = np.zeros((40, 40, 20), dtype=np.uint8)
    labels[25:30, 10:20, 5:15] = 2  # 500 ED
    labels[25:30, 10:12, 5:15] = 3  # 100 of them ET
    labels[25:27, 12:14, 5:15] = 1  # 40 NCR
    return image, labels


def test_volumes_and_ratios_are_exact():
    image, labels = _phantom()
    f = case_features(image, labels, SPACING, np.diag([*SPACING, 1.0]))
    ncr, et, ed = 40 * 2e-3, 100 * 2e-3, 360 * 2e-3  # ml
    assert f["vol_NCR_ml"] == pytest.approx(ncr) and f["vol_ET_ml"] == pytest.approx(et)
    assert f["vol_ED_ml"] == pytest.approx(ed)
    assert f["vol_TC_ml"] == pytest.approx(ncr + et) and f["vol_WT_ml"] == pytest.approx(ncr + et + ed)
    assert f["vol_brain_ml"] == pytest.approx(30 * 30 * 16 * 2e-3)
    assert f["ratio_ET_TC"] == pytest.approx(100 / 140) and f["ratio_TC_WT"] == pytest.approx(140 / 500)
    assert f["shape_WT_components"] == 1.0 and f["shape_WT_extent"] == 1.0


def test_intensity_features_use_the_brain_z_score_of_the_preprocessing():
    image, labels = _phantom()
    f = case_features(image, labels, SPACING, np.diag([*SPACING, 1.0]))
    brain = image.any(axis=0)
    for c, modality in enumerate(MODALITIES):  # by hand: clip to the 0.5/99.5 percentiles, z-score in the brain
        values = image[c][brain]
        low, high = np.percentile(values, (0.5, 99.5))
        clipped = np.clip(values, low, high)
        z = (np.clip(image[c], low, high) - clipped.mean()) / clipped.std()
        assert f[f"int_ET_{modality}_mean"] == pytest.approx(z[labels == 3].mean(), abs=1e-5)
        assert f[f"int_WT_{modality}_median"] == pytest.approx(np.median(z[labels > 0]), abs=1e-5)


def test_empty_segmentation_gives_zero_tumour_features_not_nan():
    image, labels = _phantom()
    f = case_features(image, np.zeros_like(labels), SPACING, np.eye(4))
    assert all(np.isfinite(list(f.values())))
    assert f["vol_WT_ml"] == 0 and f["ratio_ET_TC"] == 0 and f["loc_WT_hemisphere_right"] == 0


def test_features_are_deterministic_and_in_table_order():
    image, labels = _phantom()
    first = case_features(image, labels, SPACING, np.eye(4))
    second = case_features(image.copy(), labels.copy(), SPACING, np.eye(4))
    assert list(first) == list(FEATURE_NAMES)
    assert first == second


def test_no_brain_and_mismatched_shapes_are_refused():
    image, labels = _phantom()
    with pytest.raises(ValueError, match="zero everywhere"):
        case_features(np.zeros_like(image), labels, SPACING, np.eye(4))
    with pytest.raises(ValueError, match="shape"):
        case_features(image, labels[:-1], SPACING, np.eye(4))


def test_region_masks_follow_the_brats_hierarchy():
    labels = np.array([0, 1, 2, 3], dtype=np.uint8)
    masks = region_masks(labels)
    assert masks["TC"].tolist() == [False, True, False, True]
    assert masks["WT"].tolist() == [False, True, True, True]


def _write_case(root, case_id, image, labels, affine):
    folder = root / case_id
    folder.mkdir(parents=True)
    for c, m in enumerate(MODALITIES):
        nib.save(nib.Nifti1Image(image[c].astype(np.int16), affine), folder / f"{case_id}_{m}.nii.gz")
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), folder / f"{case_id}_seg.nii.gz")


def test_a_case_stored_flipped_with_the_matching_affine_has_the_same_features(tmp_path):
    image, labels = _phantom()
    labels[labels == 3] = 4  # BraTS 2017-21 files: ET = 4
    ras = np.diag([*SPACING, 1.0])
    las = ras.copy()
    las[0, 0], las[0, 3] = -1.0, 39.0  # voxel i at world x = 39 - i: the same world positions
    _write_case(tmp_path / "a", "Brats18_A_1", image, labels, ras)
    _write_case(tmp_path / "b", "Brats18_A_1", image[:, ::-1], labels[::-1], las)
    rows = [extract_dataset(find_cases(tmp_path / k), ground_truth_source())[0] for k in "ab"]
    assert rows[0].error is None and rows[1].error is None
    assert rows[0].values == pytest.approx(rows[1].values)
    assert rows[0].values["loc_WT_hemisphere_right"] == 1.0  # x 25..29 of a brain spanning 5..34


def test_features_csv_round_trip_and_bytes_are_reproducible(tmp_path, synthetic_dataset):
    cases = find_cases(synthetic_dataset)
    rows = extract_dataset(cases, ground_truth_source())
    assert [r.error for r in rows] == [None] * len(cases)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write_features_csv(rows, first)
    write_features_csv(extract_dataset(cases, ground_truth_source()), second)
    assert first.read_bytes() == second.read_bytes()
    table = read_features_csv(first)
    assert table.case_ids == [c.case_id for c in cases]
    assert table.column("vol_WT_ml") == pytest.approx([r.values["vol_WT_ml"] for r in rows], rel=1e-9)
    assert set(table.sources) == {"ground truth"}


def test_a_case_without_ground_truth_is_a_failed_row_naming_it(tmp_path, synthetic_dataset):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_dataset, root)
    victim = sorted(root.glob("*/*_seg.nii.gz"))[0]
    victim.unlink()
    rows = extract_dataset(find_cases(root), ground_truth_source())
    failed = [r for r in rows if r.error]
    assert len(failed) == 1 and victim.name.removesuffix("_seg.nii.gz") in (failed[0].error or "")
    assert "--seg" in (failed[0].error or "")


def test_reading_a_table_with_missing_columns_or_bad_cells_names_the_file(tmp_path):
    bad = tmp_path / "f.csv"
    bad.write_text("case_id,vol_WT_ml\nx,1\n")
    with pytest.raises(RadiomicsError, match=r"f\.csv.*missing columns"):
        read_features_csv(bad)
    good = tmp_path / "g.csv"
    cells = ["nan"] + ["1"] * (len(FEATURE_NAMES) - 1)
    good.write_text("case_id,segmentation," + ",".join(FEATURE_NAMES) + "\nx,gt," + ",".join(cells) + "\n")
    with pytest.raises(RadiomicsError, match=r"case x: column vol_NCR_ml"):
        read_features_csv(good)
    with pytest.raises(RadiomicsError, match="not found"):
        read_features_csv(tmp_path / "missing.csv")


def test_the_feature_table_documents_every_column_once():
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names)) == 197
    text = feature_table_markdown()
    assert all(f.pattern in text for f in FEATURES)
    assert "197 features" in text


def test_a_segmentation_model_error_is_a_failed_row_not_a_crash(synthetic_dataset):
    from glioseg.radiomics.dataset import model_source

    class Broken:
        def predict_case(self, case):
            raise RuntimeError("out of memory")

    rows = extract_dataset(find_cases(synthetic_dataset)[:2], model_source(Broken(), "broken"))  # type: ignore[arg-type]
    assert [r.values for r in rows] == [{}, {}]
    assert all(r.error and r.case_id in r.error and "out of memory" in r.error for r in rows)
