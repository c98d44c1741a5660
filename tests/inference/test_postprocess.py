import json

import numpy as np
import pytest

from glioseg.data.nifti import Case, CaseFiles
from glioseg.data.synthetic import make_synthetic_case, synthetic_geometry
from glioseg.inference.postprocess import (
    POSTPROCESS_FILE,
    PostprocessConfig,
    apply_small_et_rule,
    load_postprocess,
    postprocess_probabilities,
    save_postprocess,
    tune_postprocess,
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
    labels[3:5, 3:5, 3:5] = ET  # 8 voxels
    out = apply_small_et_rule(labels, 9)
    assert not (out == ET).any() and (out == NCR).sum() == 8
    np.testing.assert_array_equal(labels_to_regions(out)[1], labels_to_regions(labels)[1])  # TC unchanged
    assert (labels == ET).sum() == 8  # input untouched
    assert apply_small_et_rule(labels, 8) is labels  # 8 voxels is not < 8
    assert apply_small_et_rule(labels, 0) is labels


def test_postprocess_applies_rule_after_thresholds():
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[1:7, 1:7, 1:7] = ED
    labels[3:5, 3:5, 3] = ET  # 4 voxels
    probs = one_hot_regions(labels)
    assert (postprocess_probabilities(probs, "regions", PostprocessConfig(min_et_voxels=3)) == ET).sum() == 4
    assert (postprocess_probabilities(probs, "regions", PostprocessConfig(min_et_voxels=5)) == ET).sum() == 0


def test_config_validation_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="thresholds"):
        PostprocessConfig(thresholds=(0.5, 1.0, 0.5))
    with pytest.raises(ValueError, match="min_et_voxels"):
        PostprocessConfig(min_et_voxels=-1)
    assert load_postprocess(tmp_path) == PostprocessConfig()
    config = PostprocessConfig((0.4, 0.5, 0.6), 200)
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


def _tuning_cases():
    """Four cases: two with a real ET, two with a spurious 20-voxel ET and no ET in the truth."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(4):
        truth = np.zeros((24, 24, 24), dtype=np.uint8)
        truth[4:20, 4:20, 4:20] = ED
        truth[8:16, 8:16, 8:16] = NCR
        pred = truth.copy()
        if i < 2:
            truth[10:14, 10:14, 10:13] = ET  # 48 voxels
            pred[10:14, 10:14, 10:12] = ET  # 32 predicted: Dice 0.8
        else:
            pred[10:15, 10:14, 10] = ET  # 20 spurious voxels
        probs = np.clip(one_hot_regions(pred) * 0.8 + 0.1 + rng.normal(0, 0.01, (3, 24, 24, 24)), 0, 1)
        cases.append((probs.astype(np.float32), truth))
    return cases


def test_tune_postprocess_picks_the_best_min_et():
    cases = _tuning_cases()
    result = tune_postprocess(cases, min_et_candidates=(0, 10, 21, 33, 100))
    # 21 removes the spurious ET (20 voxels) but keeps the real one (32 voxels); 33 or more removes both
    assert result.config.min_et_voxels == 21
    def mean_dice(t: int) -> float:
        rule = PostprocessConfig(min_et_voxels=t)
        return float(np.mean([region_dice(postprocess_probabilities(p, "regions", rule), g).mean() for p, g in cases]))

    brute = {t: mean_dice(t) for t in (0, 10, 21, 33, 100)}
    assert max(brute, key=brute.get) == 21
    for t, score in result.min_et_scores.items():
        assert score == pytest.approx(brute[t])
    assert np.mean(result.mean_dice) > np.mean(result.baseline_dice)
    assert result.n_cases == 4 and result.to_dict()["config"]["min_et_voxels"] == 21


def test_tune_postprocess_thresholds():
    cases = []
    for _, truth in _tuning_cases()[:2]:
        shifted = np.where(one_hot_regions(truth) > 0, 0.45, 0.05).astype(np.float32)  # under-confident
        cases.append((shifted, truth))
    result = tune_postprocess(cases, tune_thresholds=True, threshold_grid=(0.3, 0.5, 0.7))
    assert result.config.thresholds == (0.3, 0.3, 0.3)
    assert result.mean_dice == pytest.approx([1.0, 1.0, 1.0])
    assert result.baseline_dice[0] == pytest.approx(0.0)


def test_tune_postprocess_bad_inputs():
    with pytest.raises(ValueError, match="no validation cases"):
        tune_postprocess([])
    with pytest.raises(ValueError, match="candidate"):
        tune_postprocess(_tuning_cases(), min_et_candidates=())
