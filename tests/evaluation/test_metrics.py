import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from glioseg.evaluation.lesionwise import LESION_MISS_HD95_MM, ground_truth_lesions, lesion_wise_scores
from glioseg.evaluation.metrics import (
    HD95_EMPTY_MM,
    hd95,
    pooled_dice,
    score_region,
    sensitivity_specificity,
    surface,
    surface_distances,
)
from glioseg.evaluation.scores import BraTSMetric, compute_brats_metrics, describe, failed_case
from glioseg.labels import ED, ET, NCR, RC, REGIONS, SCHEMES, Region
from glioseg.utils import dice


def box(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return mask


# ----------------------------------------------------------------------------- overlap, by hand


def test_overlap_metrics_by_hand():
    pred = box((10, 10, 10), (2, 2, 2), (6, 6, 6))  # 64 voxels
    gt = box((10, 10, 10), (3, 2, 2), (7, 6, 6))  # 64 voxels, 48 shared
    assert dice(pred, gt) == pytest.approx(96 / 128)
    sens, spec = sensitivity_specificity(pred, gt)
    assert sens == pytest.approx(48 / 64)
    assert spec == pytest.approx((1000 - 64 - 16) / (1000 - 64))
    scores = score_region(pred, gt, spacing=(1.0, 2.0, 0.5))
    assert scores.dice == pytest.approx(0.75) and scores.sensitivity == pytest.approx(sens)
    assert scores.specificity == pytest.approx(spec)
    assert scores.volume_pred_ml == pytest.approx(64 * 1.0 / 1000)
    assert scores.volume_true_ml == pytest.approx(64 * 1.0 / 1000)


@pytest.mark.parametrize(
    ("pred_empty", "gt_empty", "expected"),
    [
        (True, True, (1.0, 0.0, 1.0, 1.0)),
        (True, False, (0.0, HD95_EMPTY_MM, 0.0, 1.0)),
        (False, True, (0.0, HD95_EMPTY_MM, 0.0, 1 - 8 / 1000)),
    ],
)
def test_empty_mask_conventions(pred_empty, gt_empty, expected):
    full = box((10, 10, 10), (1, 1, 1), (3, 3, 3))
    empty = np.zeros((10, 10, 10), bool)
    pred, gt = (empty if pred_empty else full), (empty if gt_empty else full)
    scores = score_region(pred, gt, spacing=(0.5, 1.0, 3.0))
    assert (scores.dice, scores.hd95, scores.sensitivity, scores.specificity) == pytest.approx(expected)
    assert dice(pred, gt) == expected[0]
    assert hd95(pred, gt) == expected[1]
    assert sensitivity_specificity(pred, gt) == pytest.approx(expected[2:])
    assert HD95_EMPTY_MM == 373.13


def test_specificity_without_background():
    full = np.ones((3, 3, 3), bool)
    assert sensitivity_specificity(full, full) == (1.0, 1.0)
    assert score_region(full, full).hd95 == 0.0


# ----------------------------------------------------------------------------- HD95, by hand


def test_surface_is_face_connected_boundary():
    cube = box((7, 7, 7), (1, 1, 1), (6, 6, 6))  # 5^3
    assert surface(cube).sum() == 125 - 27
    edge = box((4, 4, 4), (0, 0, 0), (4, 4, 4))  # touching the image edge: outside is background
    assert surface(edge).sum() == 64 - 8
    assert surface(box((5, 5, 5), (2, 2, 2), (3, 3, 3))).sum() == 1


def test_hd95_single_voxels_anisotropic():
    pred = box((8, 8, 8), (1, 1, 1), (2, 2, 2))
    gt = box((8, 8, 8), (3, 2, 2), (4, 3, 3))  # offset (2, 1, 1) voxels
    assert hd95(pred, gt) == pytest.approx(math.sqrt(6))
    assert hd95(pred, gt, spacing=(0.5, 2.0, 3.0)) == pytest.approx(math.sqrt(1 + 4 + 9))


def test_hd95_is_max_of_directed_percentiles_with_interpolation():
    pred = np.zeros((8, 3, 8), bool)
    pred[0, 0, 0] = True
    gt = np.zeros((8, 3, 8), bool)
    gt[3, 0, 0] = gt[0, 0, 2] = True
    # pred->gt: [2]; gt->pred: [3, 2]; 95th percentile of [2, 3] = 2.95 (linear)
    assert hd95(pred, gt) == pytest.approx(2.95)
    # spacing z = 2: gt->pred distances [3, 4] -> 3.95; pred->gt = 3
    assert hd95(pred, gt, spacing=(1.0, 1.0, 2.0)) == pytest.approx(3.95)
    assert hd95(pred, gt, percentile=100) == pytest.approx(3.0)
    to_gt, to_pred = surface_distances(pred, gt, (1.0, 1.0, 2.0))
    assert sorted(to_gt) == [3.0] and sorted(to_pred) == [3.0, 4.0]


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.2, 2.5)])
def test_hd95_disjoint_cubes_known_distribution(spacing):
    # 3^3 cubes 5 slices apart in z: each direction has 9 x (d-2), 8 x (d-1), 9 x d slices of distance.
    a = box((6, 6, 14), (1, 1, 1), (4, 4, 4))
    b = box((6, 6, 14), (1, 1, 6), (4, 4, 9))
    sz = spacing[2]
    assert hd95(a, b, spacing) == pytest.approx(5 * sz)
    assert hd95(a, b, spacing, percentile=50) == pytest.approx(4 * sz)
    assert hd95(a, b, spacing, percentile=35) == pytest.approx((3 + 0.75) * sz)  # rank 8.75 of 26


def test_hd95_only_depends_on_the_masks_not_on_the_canvas():
    rng = np.random.default_rng(3)
    a = ndimage.binary_opening(rng.random((12, 10, 9)) > 0.45)
    b = ndimage.binary_opening(rng.random((12, 10, 9)) > 0.45)
    small = hd95(a, b, (1.0, 0.7, 2.0))
    big_a, big_b = np.zeros((40, 50, 30), bool), np.zeros((40, 50, 30), bool)
    big_a[20:32, 5:15, 11:20], big_b[20:32, 5:15, 11:20] = a, b
    # a and b touch their small canvas' edge; embedded, those faces stay surface (edge = background)
    assert hd95(big_a, big_b, (1.0, 0.7, 2.0)) == pytest.approx(small)


def _random_blob(rng, shape, threshold):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    return field > threshold * field.std()


@pytest.mark.parametrize("seed", range(6))
def test_hd95_agrees_with_monai(seed):
    torch = pytest.importorskip("torch")
    monai_hd = pytest.importorskip("monai.metrics").compute_hausdorff_distance
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(20, 33, size=3))
    spacing = tuple(float(s) for s in rng.uniform(0.5, 3.0, size=3))
    pred, gt = _random_blob(rng, shape, 0.8), _random_blob(rng, shape, 0.6)
    if seed % 2:  # also masks that touch the image edge
        pred[0], gt[:, -1] = True, True
    ours = hd95(pred, gt, spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = monai_hd(torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float(),
                          include_background=True, percentile=95, spacing=spacing).item()
    assert ours == pytest.approx(theirs, abs=1e-3)
    assert ours > 0


def test_bad_inputs_raise():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match="shape"):
        dice(a, np.zeros((4, 4, 5), bool))
    with pytest.raises(ValueError, match="spacing"):
        hd95(box((4, 4, 4), (0, 0, 0), (1, 1, 1)), box((4, 4, 4), (2, 2, 2), (3, 3, 3)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        hd95(a, a, percentile=120)
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(a, box((4, 4, 4), (0, 0, 0), (1, 1, 1)))
    with pytest.raises(ValueError, match="case X"):
        compute_brats_metrics(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 4), np.uint8), case_id="X")


# ----------------------------------------------------------------------------- regions, labels, pooled Dice


def test_regions_per_label_scheme():
    canonical = np.zeros((6, 6, 6), np.uint8)
    canonical[1:5, 1:5, 1:5] = ED
    canonical[2:4, 2:4, 2:4] = NCR
    canonical[2:4, 2:4, 3] = ET
    for scheme in SCHEMES.values():
        on_file = scheme.from_canonical(canonical)
        back = scheme.to_canonical(on_file)
        scores = compute_brats_metrics(back, canonical)
        assert all(s.dice == 1.0 and s.hd95 == 0.0 for s in scores.regions.values()), scheme.name
        assert scores.regions[Region.WT].volume_true_ml == pytest.approx(64 / 1000)
        assert scores.regions[Region.TC].volume_true_ml == pytest.approx(8 / 1000)
        assert scores.regions[Region.ET].volume_true_ml == pytest.approx(4 / 1000)
    # RC is in no region; an ET written as 3 but read as BraTS 2017 (where 3 does not exist) fails loudly
    assert compute_brats_metrics(np.full((2, 2, 2), RC, np.uint8), np.zeros((2, 2, 2), np.uint8)).regions[
        Region.WT].dice == 1.0
    with pytest.raises(ValueError, match="3"):
        SCHEMES["brats2017"].to_canonical(SCHEMES["brats2023"].from_canonical(canonical))


def test_region_scores_follow_hierarchy():
    gt = np.zeros((8, 8, 8), np.uint8)
    gt[2:6, 2:6, 2:6] = ED
    gt[3:5, 3:5, 3:5] = ET
    pred = gt.copy()
    pred[pred == ET] = NCR  # right core, wrong core label: WT and TC perfect, ET missed
    scores = compute_brats_metrics(pred, gt)
    assert scores.regions[Region.WT].dice == 1.0 and scores.regions[Region.TC].dice == 1.0
    assert scores.regions[Region.ET].dice == 0.0 and scores.regions[Region.ET].hd95 == HD95_EMPTY_MM


def test_pooled_dice_by_hand():
    gt = np.array([NCR, ED, ET, 0, 0], np.uint8)
    pred = np.array([NCR, ET, ET, 0, ED], np.uint8)
    # matching tumour voxels: 2; tumour voxels: 3 + 4
    assert pooled_dice(pred, gt) == pytest.approx(4 / 7)
    assert pooled_dice(np.zeros(3, np.uint8), np.zeros(3, np.uint8)) == 1.0


# ----------------------------------------------------------------------------- lesion-wise


def test_lesion_wise_missed_false_and_small_lesions():
    shape = (40, 40, 12)
    gt = box(shape, (2, 2, 2), (6, 6, 6)) | box(shape, (20, 2, 2), (24, 6, 6)) | box(shape, (2, 30, 2), (4, 32, 4))
    pred = box(shape, (2, 2, 2), (6, 6, 6)) | box(shape, (2, 30, 2), (4, 32, 4)) | box(shape, (30, 30, 2), (33, 33, 5))
    scores = lesion_wise_scores(pred, gt)
    # lesion 1 perfect, lesion 2 missed, the 8-voxel lesion not scored (its match is no FP), one FP
    assert (scores.lesion_tp, scores.lesion_fn, scores.lesion_fp) == (1, 1, 1)
    assert scores.lesion_dice == pytest.approx(1 / 3)
    assert scores.lesion_hd95 == pytest.approx(2 * LESION_MISS_HD95_MM / 3)


def test_lesion_wise_dilation_merges_close_lesions():
    shape = (30, 12, 12)
    near = box(shape, (2, 2, 2), (6, 6, 6)) | box(shape, (8, 2, 2), (12, 6, 6))  # gap of 2 voxels
    assert len(np.unique(ground_truth_lesions(near))) == 2  # background + one lesion
    far = box(shape, (2, 2, 2), (6, 6, 6)) | box(shape, (16, 2, 2), (20, 6, 6))  # gap of 10 voxels
    assert len(np.unique(ground_truth_lesions(far))) == 3
    half = box(shape, (2, 2, 2), (6, 6, 6))
    merged = lesion_wise_scores(half, near)
    assert (merged.lesion_tp, merged.lesion_fn, merged.lesion_fp) == (1, 0, 0)
    assert merged.lesion_dice == pytest.approx(2 * 64 / (64 + 128))
    split = lesion_wise_scores(half, far)
    assert (split.lesion_tp, split.lesion_fn, split.lesion_fp) == (1, 1, 0)
    assert split.lesion_dice == pytest.approx(0.5)
    assert split.lesion_hd95 == pytest.approx(LESION_MISS_HD95_MM / 2)


def test_lesion_wise_match_within_dilation_and_hd95():
    shape = (30, 12, 12)
    gt = box(shape, (2, 2, 2), (8, 8, 8))
    beside = box(shape, (10, 2, 2), (14, 8, 8))  # 2 voxels from the lesion: matched, not FP
    scores = lesion_wise_scores(beside, gt, spacing=(2.0, 1.0, 1.0))
    assert (scores.lesion_tp, scores.lesion_fp) == (1, 0)
    assert scores.lesion_dice == 0.0
    assert scores.lesion_hd95 == pytest.approx(hd95(beside, gt, (2.0, 1.0, 1.0)))
    away = box(shape, (20, 2, 2), (24, 8, 8))
    assert lesion_wise_scores(away, gt).lesion_fp == 1


def test_lesion_wise_empty_conventions():
    empty = np.zeros((20, 20, 20), bool)
    nothing = lesion_wise_scores(empty, empty)
    assert (nothing.lesion_dice, nothing.lesion_hd95) == (1.0, 0.0)
    fp_only = lesion_wise_scores(box((20, 20, 20), (2, 2, 2), (5, 5, 5)), empty)
    assert (fp_only.lesion_dice, fp_only.lesion_hd95, fp_only.lesion_fp) == (0.0, LESION_MISS_HD95_MM, 1)
    small_only = lesion_wise_scores(empty, box((20, 20, 20), (2, 2, 2), (5, 5, 5)))  # 27 voxels: not scored
    assert (small_only.lesion_dice, small_only.lesion_hd95, small_only.lesion_fn) == (1.0, 0.0, 0)


# ----------------------------------------------------------------------------- case level and accumulator


def _labels(shape=(16, 16, 16), offset=0):
    out = np.zeros(shape, np.uint8)
    out[3 + offset:12 + offset, 3:12, 3:12] = ED
    out[5 + offset:10 + offset, 5:10, 5:10] = NCR
    out[6 + offset:9 + offset, 6:9, 6:9] = ET
    return out


def test_compute_brats_metrics_and_accumulator():
    gt = _labels()
    metric = BraTSMetric(spacing=(1.0, 1.0, 2.0), lesion_wise=True)
    same = metric(gt, gt, case_id="same")
    moved = metric(_labels(offset=1), gt, case_id="moved")
    assert all(s.dice == 1.0 and s.hd95 == 0.0 for s in same.regions.values())
    assert same.pooled_dice == 1.0 and same.lesion is not None
    assert all(0 < s.dice < 1 and s.hd95 == pytest.approx(1.0) for s in moved.regions.values())
    assert moved.regions[Region.WT].volume_true_ml == pytest.approx(9 ** 3 * 2 / 1000)
    metric.add(failed_case("gone", "missing", "no prediction file", lesion_wise=True))
    summary = metric.aggregate()
    wt_dice = [1.0, moved.regions[Region.WT].dice, 0.0]
    assert summary["WT"]["dice"]["mean"] == pytest.approx(np.mean(wt_dice))
    assert summary["WT"]["dice"]["median"] == pytest.approx(np.median(wt_dice))
    assert summary["WT"]["hd95"]["max"] == HD95_EMPTY_MM
    assert summary["WT"]["volume_pred_ml"]["n"] == 2  # the failure has no predicted volume
    assert summary["ET"]["lesion_dice"]["n"] == 3
    rows = metric.rows()
    assert rows[2]["status"] == "missing" and rows[2]["dice_ET"] == 0.0 and "lesion_hd95_TC" in rows[0]
    metric.reset()
    assert metric.cases == []


def test_describe():
    stats = describe([1.0, 2.0, 3.0, 4.0, float("nan")])
    assert stats["n"] == 4 and stats["mean"] == 2.5 and stats["q1"] == 1.75 and stats["q3"] == 3.25
    assert stats["std"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert describe([])["n"] == 0 and math.isnan(describe([])["mean"])


def test_failed_case_scores_worst_everywhere():
    case = failed_case("X", "error", "corrupt", {r: 1.5 for r in REGIONS})
    assert case.failed and case.mean_dice == 0.0
    assert all(s.hd95 == HD95_EMPTY_MM and s.sensitivity == 0.0 for s in case.regions.values())
    assert case.regions[Region.ET].volume_true_ml == 1.5 and math.isnan(case.regions[Region.ET].volume_pred_ml)
