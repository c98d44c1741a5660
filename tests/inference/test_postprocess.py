import json

import numpy as np
import pytest

from glioseg.data.nifti import Case, CaseFiles
from glioseg.data.synthetic import make_synthetic_case, synthetic_geometry
from glioseg.inference.postprocess import (
    POSTPROCESS_FILE,
    PostprocessConfig,
    apply_small_et_rule,
    apply_volume_rules,
    load_postprocess,
    postprocess_probabilities,
    remove_small_components,
    save_postprocess,
)
from glioseg.labels import BG, ED, ET, NCR, labels_to_regions, probabilities_to_labels
from glioseg.preprocessing.normalize import preprocess_case
from glioseg.preprocessing.restore import restore_probabilities
from glioseg.utils import region_dice


def one_hot_regions(labels: np.ndarray) -> np.ndarray:
    return labels_to_regions(labels).astype(np.float32)


def test_regions_to_labels_with_thresholds():
    probs = np.zeros((3, 2, 2, 1), dtype=np.float32)
    probs[:, 0, 0, 0] = (0.9, 0.1, 0.1)  # WT only -> ED
    probs[:, 0, 1, 0] = (0.9, 0.8, 0.2)  # WT + TC -> NCR
    probs[:, 1, 0, 0] = (0.9, 0.8, 0.7)  # all -> ET
    probs[:, 1, 1, 0] = (0.4, 0.1, 0.1)  # nothing -> BG
    labels = probabilities_to_labels(probs)
    assert labels.dtype == np.uint8
    assert labels[:, :, 0].tolist() == [[ED, NCR], [ET, BG]]
    labels = probabilities_to_labels(probs, thresholds=(0.35, 0.9, 0.5))
    assert labels[:, :, 0].tolist() == [[ED, ED], [ET, ED]]


def test_labels_mode_argmax():
    probs = np.zeros((4, 3, 1, 1), dtype=np.float32)
    probs[0, 0], probs[3, 1], probs[2, 2] = 1.0, 0.6, 0.7
    probs[1, 1] = 0.4
    assert probabilities_to_labels(probs, "labels")[:, 0, 0].tolist() == [BG, ET, ED]


def test_bad_channel_counts_and_target():
    with pytest.raises(ValueError, match="WT, TC, ET"):
        probabilities_to_labels(np.zeros((4, 2, 2, 2)), "regions")
    with pytest.raises(ValueError, match="target"):
        probabilities_to_labels(np.zeros((3, 2, 2, 2)), "logits")


def test_small_et_rule():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[2:6, 2:6, 2:6] = ED
    labels[3:5, 3:5, 3:5] = ET  # 8 voxels: 8 mm^3 at 1 mm, 64 mm^3 at 2 mm
    out = apply_small_et_rule(labels, 9, (1.0, 1.0, 1.0))
    assert not (out == ET).any() and (out == NCR).sum() == 8
    np.testing.assert_array_equal(labels_to_regions(out)[1], labels_to_regions(labels)[1])  # TC unchanged
    assert (labels == ET).sum() == 8  # input untouched
    assert apply_small_et_rule(labels, 8, (1.0, 1.0, 1.0)) is labels  # 8 mm^3 is not < 8 mm^3
    assert apply_small_et_rule(labels, 9, (2.0, 2.0, 2.0)) is labels  # 64 mm^3
    assert (apply_small_et_rule(labels, 65, (2.0, 2.0, 2.0)) == ET).sum() == 0
    assert apply_small_et_rule(labels, 0, (1.0, 1.0, 1.0)) is labels
    with pytest.raises(ValueError, match="spacing"):
        apply_small_et_rule(labels, 9, (1.0, 0.0, 1.0))


def test_postprocess_applies_rule_after_thresholds():
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[1:7, 1:7, 1:7] = ED
    labels[3:5, 3:5, 3] = ET  # 4 voxels
    probs = one_hot_regions(labels)
    one = (1.0, 1.0, 1.0)
    assert (postprocess_probabilities(probs, "regions", PostprocessConfig(min_et_mm3=3), one) == ET).sum() == 4
    assert (postprocess_probabilities(probs, "regions", PostprocessConfig(min_et_mm3=5), one) == ET).sum() == 0
    with pytest.raises(ValueError, match="voxel spacing"):
        postprocess_probabilities(probs, "regions", PostprocessConfig(min_et_mm3=5))
    assert (postprocess_probabilities(probs, "regions", PostprocessConfig()) == ET).sum() == 4  # no rule: no spacing


def test_config_validation_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="thresholds"):
        PostprocessConfig(thresholds=(0.5, 1.0, 0.5))
    with pytest.raises(ValueError, match="min_et_mm3"):
        PostprocessConfig(min_et_mm3=-1)
    with pytest.raises(ValueError, match="min_component_mm3"):
        PostprocessConfig(min_component_mm3=(1.0, 2.0))
    with pytest.raises(ValueError, match="min_component_mm3"):
        PostprocessConfig(min_component_mm3=(1.0, float("nan"), 0.0))
    assert load_postprocess(tmp_path) == PostprocessConfig()
    config = PostprocessConfig((0.4, 0.5, 0.6), 200.5, (100.0, 50.0, 0.0))
    save_postprocess(config, tmp_path, {"report": {"n_cases": 3}})
    assert load_postprocess(tmp_path) == config
    assert json.loads((tmp_path / POSTPROCESS_FILE).read_text())["report"] == {"n_cases": 3}
    (tmp_path / POSTPROCESS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="tune-postprocess"):
        load_postprocess(tmp_path)


def test_region_dice_brats_conventions():
    empty = np.zeros((4, 4, 4), dtype=np.uint8)
    assert region_dice(empty, empty).tolist() == [1.0, 1.0, 1.0]
    truth = empty.copy()
    truth[0, 0, :2] = ED
    pred = empty.copy()
    pred[0, 0, :2] = ED
    pred[1, 1, 1] = ET
    dice = region_dice(pred, truth)
    assert dice[0] == pytest.approx(2 * 2 / 5)
    assert dice[1] == 0.0 and dice[2] == 0.0  # predicted, but empty in the truth
    with pytest.raises(ValueError, match="shape"):
        region_dice(empty, empty[:2])


def _case(shape=(40, 44, 36), seed=0):
    image, label = make_synthetic_case(shape, seed=seed)
    return Case("c0", image, label, synthetic_geometry(shape), CaseFiles("c0", {}))


def test_restore_probabilities_exact_without_resampling():
    case = _case()
    pc = preprocess_case(case)
    assert pc.image.shape[1:] != case.image.shape[1:]  # the brain crop is real
    restored = restore_probabilities(one_hot_regions(pc.label), pc.meta)
    assert restored.shape == (3, *case.label.shape) and restored.dtype == np.float32
    np.testing.assert_array_equal(probabilities_to_labels(restored), case.label)


def test_restore_probabilities_with_resampling_is_close():
    case = _case()
    pc = preprocess_case(case, spacing_mm=2.0)
    restored = restore_probabilities(one_hot_regions(pc.label), pc.meta)
    assert restored.shape == (3, *case.label.shape)
    assert region_dice(probabilities_to_labels(restored), case.label)[0] > 0.85


def _sphere(shape: tuple[int, int, int], spacing: float, centre_mm, radius_mm: float) -> np.ndarray:
    """bool mask of the voxels whose centres lie inside a sphere given in mm."""
    axes = [(np.arange(n) + 0.5) * spacing for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return (x - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (z - centre_mm[2]) ** 2 <= radius_mm ** 2


def _lesion(spacing: float, et_radius_mm: float = 4.0) -> np.ndarray:
    """A 40 mm field of view: an edema sphere (r 12 mm) around an ET sphere, on a grid of ``spacing`` mm."""
    shape = (round(40 / spacing),) * 3
    labels = np.zeros(shape, dtype=np.uint8)
    labels[_sphere(shape, spacing, (20, 20, 20), 12.0)] = ED
    labels[_sphere(shape, spacing, (20, 20, 20), et_radius_mm)] = ET  # 4/3 pi 4^3 = 268 mm^3
    return labels


@pytest.mark.parametrize("threshold_mm3, relabelled", [(150.0, False), (400.0, True)])
def test_small_et_rule_same_on_1mm_and_2mm_grids(threshold_mm3, relabelled):
    fine, coarse = _lesion(1.0), _lesion(2.0)
    volumes = [(fine == ET).sum() * 1.0, (coarse == ET).sum() * 8.0]
    assert all(200 < v < 330 for v in volumes), volumes  # the same physical lesion on both grids
    assert (fine == ET).sum() > 7 * (coarse == ET).sum()  # but very different voxel counts
    for labels, s in ((fine, 1.0), (coarse, 2.0)):
        out = apply_small_et_rule(labels, threshold_mm3, (s, s, s))
        assert (not (out == ET).any()) is relabelled
        np.testing.assert_array_equal(labels_to_regions(out)[1], labels_to_regions(labels)[1])


def test_small_components_per_region_in_mm3():
    for s in (1.0, 2.0):
        labels = _lesion(s)
        shape = labels.shape
        blob = _sphere(shape, s, (6, 6, 6), 4.5)  # a separate WT component of 382 mm^3 (360 / 448 on the grids)
        labels[blob] = ED
        spacing = (s, s, s)
        out = remove_small_components(labels, (600.0, 0.0, 0.0), spacing)
        assert not out[blob].any() and (out[~blob] == labels[~blob]).all()
        assert remove_small_components(labels, (250.0, 0.0, 0.0), spacing) is labels  # it stays
        out = remove_small_components(labels, (0.0, 0.0, 400.0), spacing)  # ET (268 mm^3) -> NCR
        assert not (out == ET).any() and ((out == NCR) == (labels == ET)).all()
        out = remove_small_components(labels, (0.0, 400.0, 0.0), spacing)  # TC, ET inside -> edema
        assert not np.isin(out, (NCR, ET)).any() and ((out == ED) == (labels > 0)).all()


def test_removed_wt_component_takes_its_core():
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = ED
    labels[1, 1, 1] = ET  # a small WT part with its own ET
    labels[5:11, 5:11, 5:11] = ED
    labels[7:9, 7:9, 7:9] = NCR
    labels[0, 11, 11] = 4  # RC is in no region and stays
    out = remove_small_components(labels, (9.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert out[1:3, 1:3, 1:3].max() == BG and out[0, 11, 11] == 4
    np.testing.assert_array_equal(out[5:, 5:, 5:], labels[5:, 5:, 5:])


def test_volume_rules_need_spacing_only_when_on():
    labels = _lesion(2.0)
    assert apply_volume_rules(labels, PostprocessConfig(), None) is labels
    with pytest.raises(ValueError, match="spacing"):
        apply_volume_rules(labels, PostprocessConfig(min_component_mm3=(1.0, 0.0, 0.0)), None)


def test_old_min_et_voxels_converted_with_the_tuning_grid(tmp_path):
    (tmp_path / POSTPROCESS_FILE).write_text(json.dumps({"thresholds": [0.5, 0.5, 0.5], "min_et_voxels": 100}))
    assert load_postprocess(tmp_path, tuned_spacing_mm=2.0).min_et_mm3 == 800.0  # 100 voxels of 8 mm^3
    assert load_postprocess(tmp_path, tuned_spacing_mm=1.0).min_et_mm3 == 100.0
    with pytest.raises(ValueError, match=rf"{POSTPROCESS_FILE}: .*min_et_voxels 100 .*min_et_mm3"):
        load_postprocess(tmp_path)  # the grid is unknown: refused, not guessed
    (tmp_path / POSTPROCESS_FILE).write_text(json.dumps({"min_et_voxels": 0}))
    assert load_postprocess(tmp_path) == PostprocessConfig()  # 0 means off on any grid
    (tmp_path / POSTPROCESS_FILE).write_text(json.dumps({"min_et_voxels": 10, "min_et_mm3": 80.0}))
    with pytest.raises(ValueError, match="both min_et_mm3 and min_et_voxels"):
        load_postprocess(tmp_path, tuned_spacing_mm=2.0)
    (tmp_path / POSTPROCESS_FILE).write_text(json.dumps({"min_et_voxels": 2.5}))
    with pytest.raises(ValueError, match="whole number"):
        load_postprocess(tmp_path, tuned_spacing_mm=2.0)
    (tmp_path / POSTPROCESS_FILE).write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="JSON object"):
        load_postprocess(tmp_path)


def test_shipped_postprocess_reads_as_mm3():
    from glioseg.artifacts.bundles import default_model_dir

    config = load_postprocess(default_model_dir(), tuned_spacing_mm=2.0)
    raw = json.loads((default_model_dir() / POSTPROCESS_FILE).read_text())
    expected = raw["min_et_mm3"] if "min_et_mm3" in raw else raw["min_et_voxels"] * 8.0
    assert config.min_et_mm3 == expected and config.thresholds == tuple(raw["thresholds"])
