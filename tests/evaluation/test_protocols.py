"""The protocol table and each protocol's rules on small hand-computed cases.

brats2023/2024 have no installable official package, so their definitions (as documented in
:mod:`glioseg.evaluation.protocols`) are checked by hand here; brats2025 is also compared with
the official code on real cases in ``test_protocol_parity.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from glioseg.evaluation.lesionwise import matched_lesion_scores
from glioseg.evaluation.metrics import hd95, surface_distances
from glioseg.evaluation.protocols import PROTOCOLS, ProtocolError, get_protocol, protocol_help
from glioseg.evaluation.scores import compute_brats_metrics, failed_case, summarize
from glioseg.labels import ED, ET, NCR, Region


def box(shape, lo, hi):
    out = np.zeros(shape, bool)
    out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return out


def test_table_rows_and_errors():
    assert list(PROTOCOLS) == ["brats2021", "brats2023", "brats2024", "brats2025"]
    new = get_protocol("brats2024")
    assert new.min_lesion(Region.ET) == 10 and new.min_lesion(Region.WT) == 20
    assert get_protocol("brats2023").min_lesion(Region.ET) == 50
    assert get_protocol("brats2025").matching == "one-to-one" and get_protocol("brats2025").drops_empty
    with pytest.raises(ProtocolError, match="unknown protocol 'brats2022'; choose one of brats2021, brats2023"):
        get_protocol("brats2022")
    params = get_protocol("brats2025").parameters()
    assert params["lesion_miss_hd95_mm"] == "inf" and params["min_lesion_mm3"] == {"WT": 0, "TC": 0, "ET": 0}
    assert all(p.official_code in protocol_help() and p.official_version in protocol_help() for p in PROTOCOLS.values())


def test_cli_help_names_the_official_code_of_every_protocol():
    from glioseg.cli.evaluate import PROTOCOL_HELP

    for name, row in PROTOCOLS.items():
        assert name in PROTOCOL_HELP
        assert row.official_code.split(" ")[0] in PROTOCOL_HELP  # e.g. rachitsaluja/BraTS-2024-Metrics, CaPTk


def _labels(shape, *parts):
    out = np.zeros(shape, np.uint8)
    for label, lo, hi in parts:
        out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = label
    return out


def test_2023_and_2024_thresholds_differ_on_small_lesions():
    """A 27-voxel ET lesion (3^3) is below 2023's 50 mm^3 but above 2024's 10 mm^3 (ET) and 20 (WT)."""
    shape = (40, 40, 20)
    big = (ET, (2, 2, 2), (8, 8, 8))  # 216 voxels, predicted
    small = (ET, (25, 25, 10), (28, 28, 13))  # 27 voxels, missed
    gt, pred = _labels(shape, big, small), _labels(shape, big)
    old = compute_brats_metrics(pred, gt, protocol="brats2023").lesion
    new = compute_brats_metrics(pred, gt, protocol="brats2024").lesion
    assert old is not None and new is not None
    assert (old[Region.ET].lesion_tp, old[Region.ET].lesion_fn, old[Region.ET].lesion_dice) == (1, 0, 1.0)
    assert (new[Region.ET].lesion_tp, new[Region.ET].lesion_fn) == (1, 1)
    assert new[Region.ET].lesion_dice == 0.5 and new[Region.ET].lesion_hd95 == pytest.approx(374 / 2)
    assert new[Region.WT].lesion_dice == 0.5  # 27 mm^3 > 20 mm^3 in WT too
    on_2mm = compute_brats_metrics(pred, gt, spacing=(2.0, 1.0, 1.0), protocol="brats2023").lesion
    assert on_2mm is not None and on_2mm[Region.ET].lesion_fn == 1  # 54 mm^3 > 50: the threshold is a volume


def test_legacy_and_lesion_protocols_penalties():
    shape = (20, 20, 20)
    gt = _labels(shape, (ED, (2, 2, 2), (12, 12, 12)))
    pred = np.zeros(shape, np.uint8)
    legacy = compute_brats_metrics(pred, gt)
    assert legacy.regions[Region.WT].hd95 == 373.13 and legacy.regions[Region.ET].dice == 1.0
    lesion23 = compute_brats_metrics(pred, gt, protocol="brats2023")
    assert lesion23.regions[Region.WT].hd95 == 374.0 and lesion23.lesion is not None
    assert lesion23.lesion[Region.ET].lesion_dice == 1.0  # no ET at all: nothing to score
    new = compute_brats_metrics(pred, gt, protocol="brats2025")
    assert new.regions[Region.WT].hd95 == 373.0 and math.isnan(new.regions[Region.ET].dice)
    assert new.lesion is not None and math.isinf(new.lesion[Region.WT].lesion_hd95)
    assert new.lesion[Region.WT].lesion_f1 == 0.0 and math.isnan(new.lesion[Region.ET].lesion_f1)
    assert failed_case("X", "missing", "gone", protocol="brats2025").lesion[Region.ET].lesion_hd95 == 373.0  # type: ignore[index]


def test_brats2025_matches_one_to_one_where_2023_merges():
    """Two predicted halves of one lesion: 2023 scores their union (Dice 1); brats2025 matches one
    half only (Dice 2/3), counts the other as a false positive and scores detection by F1."""
    shape = (30, 12, 12)
    gt = box(shape, (2, 2, 2), (20, 8, 8))
    halves = box(shape, (2, 2, 2), (10, 8, 8)) | box(shape, (12, 2, 2), (20, 8, 8))  # 2-voxel gap
    pred = gt & halves
    one = matched_lesion_scores(pred, gt)
    assert (one.lesion_tp, one.lesion_fp, one.lesion_fn) == (1, 1, 0)
    assert one.lesion_dice == pytest.approx(2 * 8 / (18 + 8))
    assert one.lesion_f1 == pytest.approx(1 / (1 + 0.5))
    legacy = compute_brats_metrics(pred.astype(np.uint8) * ET, gt.astype(np.uint8) * ET, protocol="brats2023")
    assert legacy.lesion is not None and legacy.lesion[Region.ET].lesion_fp == 0
    assert legacy.lesion[Region.ET].lesion_dice == pytest.approx(2 * 16 / (18 + 16))


def test_brats2025_matching_prefers_the_better_pair():
    """One prediction overlapping two lesions goes to the one it overlaps best (maximum total Dice)."""
    shape = (30, 10, 10)
    gt = box(shape, (2, 2, 2), (8, 8, 8)) | box(shape, (12, 2, 2), (26, 8, 8))
    pred = box(shape, (6, 2, 2), (26, 8, 8))  # touches the first lesion a little, the second a lot
    scores = matched_lesion_scores(pred, gt)
    assert (scores.lesion_tp, scores.lesion_fp, scores.lesion_fn) == (1, 0, 1)
    assert scores.lesion_dice == pytest.approx(2 * 14 / (14 + 20))


def test_pooled_hd95_documented_difference():
    """max-directed (brats2021/2023) vs pooled (brats2025) 95th percentiles differ on asymmetric errors."""
    gt = box((40, 20, 20), (5, 5, 5), (15, 15, 15))
    pred = gt | box((40, 20, 20), (15, 8, 8), (30, 12, 12))  # a long spur
    to_gt, to_pred = surface_distances(pred, gt)
    directed = max(np.percentile(to_gt, 95), np.percentile(to_pred, 95))
    pooled = np.percentile(np.concatenate([to_gt, to_pred]), 95)
    assert hd95(pred, gt) == pytest.approx(directed) and hd95(pred, gt, pooled=True) == pytest.approx(pooled)
    assert hd95(pred, gt) > hd95(pred, gt, pooled=True) + 1


def test_brats2025_summary_drops_empty_cases_and_keeps_inf():
    shape = (16, 16, 16)
    gt = _labels(shape, (NCR, (3, 3, 3), (10, 10, 10)))
    cases = [compute_brats_metrics(gt, gt, protocol="brats2025", case_id="same"),
             compute_brats_metrics(np.zeros(shape, np.uint8), gt, protocol="brats2025", case_id="missed")]
    summary = summarize(cases)
    assert summary["ET"]["dice"]["n"] == 0  # no ET anywhere: both cases dropped
    assert summary["TC"]["dice"]["n"] == 2 and summary["TC"]["dice"]["mean"] == 0.5
    assert math.isinf(summary["TC"]["lesion_hd95"]["mean"])  # as pandas' mean in brats-evaluation
    assert math.isinf(summary["TC"]["lesion_hd95"]["median"])  # pandas' median of [0, inf]; numpy's is NaN
    assert summary["TC"]["lesion_hd95"]["min"] == 0.0 and math.isnan(summary["TC"]["lesion_hd95"]["std"])
    assert summary["TC"]["lesion_f1"]["mean"] == 0.5
    assert "lesion_f1_TC" in cases[0].to_row() and "lesion_f1_TC" not in compute_brats_metrics(
        gt, gt, protocol="brats2023").to_row()
