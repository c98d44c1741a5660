import numpy as np
import pytest

from glioseg.inference.postprocess import PostprocessConfig, postprocess_probabilities
from glioseg.inference.tuning import TuningCase, tune_postprocess
from glioseg.labels import ED, ET, NCR, labels_to_regions
from glioseg.utils import region_dice


def _probs(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = labels_to_regions(labels).astype(np.float32) * 0.8 + 0.1 + rng.normal(0, 0.01, (3, *labels.shape))
    return np.clip(noisy, 0, 1).astype(np.float32)


def _tuning_cases(spacing: float = 1.0) -> list[TuningCase]:
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
        cases.append(TuningCase(_probs(pred, rng), truth, (spacing,) * 3))
    return cases


@pytest.mark.parametrize("spacing", [1.0, 2.0])
def test_tune_picks_the_best_min_et_in_mm3(spacing):
    voxel = spacing ** 3
    cases = _tuning_cases(spacing)
    candidates = [v * voxel for v in (0, 10, 21, 33, 100)]
    result = tune_postprocess(cases, min_et_candidates=candidates, component_candidates=(0,))
    # 21 voxels removes the spurious ET (20 voxels) but keeps the real one (32 voxels); 33 or more removes both
    assert result.config.min_et_mm3 == 21 * voxel

    def mean_dice(t: float) -> float:
        rule = PostprocessConfig(min_et_mm3=t)
        return float(np.mean([region_dice(postprocess_probabilities(c.probabilities, "regions", rule, c.spacing),
                                          c.truth).mean() for c in cases]))

    brute = {t: mean_dice(t) for t in candidates}
    assert max(brute, key=brute.get) == 21 * voxel
    for t, score in result.min_et_scores.items():
        assert score == pytest.approx(brute[t])
    assert np.mean(result.mean_dice) > np.mean(result.baseline_dice)
    report = result.to_dict()
    assert report["config"]["min_et_mm3"] == 21 * voxel and report["units"] == "mm^3" and result.n_cases == 4


def test_tune_removes_small_false_components():
    rng = np.random.default_rng(1)
    cases = []
    for _ in range(3):
        truth = np.zeros((24, 24, 24), dtype=np.uint8)
        truth[6:18, 6:18, 6:18] = ED
        pred = truth.copy()
        pred[0:2, 0:2, 0:2] = ED  # a separate 8-voxel false tumour: 64 mm^3 at 2 mm
        cases.append(TuningCase(_probs(pred, rng), truth, (2.0, 2.0, 2.0)))
    result = tune_postprocess(cases, min_et_candidates=(0,), component_candidates=(0, 40, 65, 100, 10**6))
    assert result.config.min_component_mm3 == (65.0, 0.0, 0.0)  # removes the blob; 100 ties, the smaller wins
    assert result.mean_dice == pytest.approx([1.0, 1.0, 1.0]) and result.baseline_dice[0] < 1.0
    assert result.component_scores["WT"][1e6] < result.component_scores["WT"][65.0]  # everything removed


def test_tune_thresholds():
    cases = []
    for c in _tuning_cases()[:2]:
        shifted = np.where(labels_to_regions(c.truth) > 0, 0.45, 0.05).astype(np.float32)  # under-confident
        cases.append(TuningCase(shifted, c.truth, c.spacing))
    result = tune_postprocess(cases, tune_thresholds=True, threshold_grid=(0.3, 0.5, 0.7))
    assert result.config.thresholds == (0.3, 0.3, 0.3)
    assert result.mean_dice == pytest.approx([1.0, 1.0, 1.0])
    assert result.baseline_dice[0] == pytest.approx(0.0)


def test_tune_bad_inputs():
    with pytest.raises(ValueError, match="no validation cases"):
        tune_postprocess([])
    with pytest.raises(ValueError, match="min_et_mm3 candidate"):
        tune_postprocess(_tuning_cases(), min_et_candidates=())
    with pytest.raises(ValueError, match="min_component_mm3 candidates must be volumes"):
        tune_postprocess(_tuning_cases(), component_candidates=(0, -5))
    bad = [TuningCase(c.probabilities, c.truth, (1.0, 1.0, 0.0)) for c in _tuning_cases()]
    with pytest.raises(ValueError, match="spacing"):
        tune_postprocess(bad)
