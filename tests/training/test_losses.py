"""Losses: targets from canonical labels and Dice/BCE values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from glioseg.labels import output_channels, probabilities_to_labels
from glioseg.training.losses import (
    LabelLoss,
    RegionLoss,
    build_loss,
    label_loss,
    labels_target,
    one_hot,
    region_loss,
    regions_target,
    soft_dice,
)
from glioseg.training.validation import logits_to_probabilities

BIG = 30.0  # sigmoid(30) == 1 in float32


def test_regions_target_follows_brats_rules():
    labels = torch.tensor([[0, 1, 2, 3, 4]], dtype=torch.uint8)  # BG NCR ED ET RC
    regions = regions_target(labels)
    assert regions.shape == (1, 3, 5) and regions.dtype == torch.float32
    assert regions[0].tolist() == [[0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 0, 0, 1, 0]]


def test_labels_target_and_one_hot():
    idx = labels_target(torch.tensor([[0, 1, 2, 3, 4]], dtype=torch.uint8))
    assert idx.tolist() == [[0, 1, 2, 3, 0]]
    oh = one_hot(idx)
    assert oh.shape == (1, 4, 5) and oh.sum(1).eq(1).all() and oh[0, 3, 3] == 1


def test_soft_dice_by_hand():
    probs = torch.tensor([[[0.5, 1.0, 0.0, 0.0]]])
    target = torch.tensor([[[1.0, 1.0, 0.0, 1.0]]])
    # I = 1.5, P = 1.5, T = 3 -> 2*1.5 / 4.5
    assert soft_dice(probs, target, smooth=0.0).item() == pytest.approx(3.0 / 4.5)


def test_soft_dice_empty_masks():
    empty = torch.zeros(1, 1, 4)
    assert soft_dice(empty, empty, smooth=1e-5).item() == pytest.approx(1.0)  # nothing to find, nothing found
    assert soft_dice(torch.full((1, 1, 4), 0.5), empty, smooth=1e-5).item() == pytest.approx(0.0, abs=1e-4)


def test_batch_dice_pools_cases():
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    target = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    per_case = soft_dice(probs, target, smooth=0.0)
    assert per_case.shape == (2, 1) and per_case.flatten().tolist() == [1.0, 0.0]
    pooled = soft_dice(probs, target, smooth=0.0, batch_dice=True)
    assert pooled.shape == (1,) and pooled.item() == pytest.approx(2 * 1 / (1 + 2))


def test_region_loss_perfect_prediction_is_zero():
    labels = torch.tensor([[[0, 1, 2, 3]]], dtype=torch.uint8)  # (B=1, 1, 4)
    logits = (regions_target(labels) * 2 - 1) * BIG
    assert region_loss(logits, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_region_loss_by_hand():
    labels = torch.tensor([[2, 0]], dtype=torch.uint8)  # WT = [1, 0], TC = ET = [0, 0] (empty)
    logits = torch.zeros(1, 3, 2)  # every probability 0.5
    # WT dice = 2*0.5/(1+1) = 0.5; TC, ET: empty targets with mass 1 -> ~0; BCE = ln 2
    expected_dice = 1 - (0.5 + 0 + 0) / 3
    assert region_loss(logits, labels, bce_weight=0.0, smooth=0.0).item() == pytest.approx(expected_dice)
    assert region_loss(logits, labels, dice_weight=0.0).item() == pytest.approx(math.log(2))
    both = region_loss(logits, labels, dice_weight=2.0, bce_weight=0.5, smooth=0.0).item()
    assert both == pytest.approx(2 * expected_dice + 0.5 * math.log(2))


def test_region_loss_empty_case_predicted_empty():
    labels = torch.zeros(1, 2, 2, 2, dtype=torch.uint8)
    assert region_loss(torch.full((1, 3, 2, 2, 2), -BIG), labels, bce_weight=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_label_loss_paper_dice_by_hand():
    labels = torch.tensor([[0, 1]], dtype=torch.uint8)
    logits = torch.zeros(1, 4, 2)  # uniform softmax 0.25 everywhere
    # class 0: I=.25, P=.5, T=1 -> .5/1.5; class 1 same; classes 2,3: I=0 -> 0
    dice = [0.5 / 1.5, 0.5 / 1.5, 0.0, 0.0]
    assert label_loss(logits, labels, smooth=0.0).item() == pytest.approx(1 - sum(dice) / 4)
    no_bg = label_loss(logits, labels, smooth=0.0, include_background=False).item()
    assert no_bg == pytest.approx(1 - sum(dice[1:]) / 3)
    ce = label_loss(logits, labels, dice_weight=0.0, ce_weight=1.0).item()
    assert ce == pytest.approx(math.log(4))


def test_modules_match_functions():
    labels = torch.randint(0, 4, (2, 4, 4, 4), dtype=torch.uint8)
    logits3, logits4 = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 4, 4, 4, 4)
    expected = region_loss(logits3, labels, 1.0, 0.3, batch_dice=True)
    assert RegionLoss(1.0, 0.3, batch_dice=True)(logits3, labels) == expected
    assert LabelLoss(ce_weight=1.0)(logits4, labels) == label_loss(logits4, labels, ce_weight=1.0)
    assert isinstance(build_loss("labels"), LabelLoss) and isinstance(build_loss("regions"), RegionLoss)


def test_gradients_flow():
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    region_loss(logits, torch.randint(0, 4, (1, 4, 4, 4))).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_bad_inputs():
    labels = torch.zeros(1, 4, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="out_channels must be 3"):
        region_loss(torch.zeros(1, 4, 4, 4, 4), labels)
    with pytest.raises(ValueError, match="out_channels must be 4"):
        label_loss(torch.zeros(1, 3, 4, 4, 4), labels)
    with pytest.raises(ValueError, match="labels"):
        region_loss(torch.zeros(1, 3, 4, 4, 2), labels)
    with pytest.raises(ValueError, match=r"unknown target 'softmax'.*regions"):
        build_loss("softmax")
    with pytest.raises(ValueError, match="unknown target"):
        output_channels("x")
    with pytest.raises(ValueError, match="differs"):
        soft_dice(torch.zeros(1, 1, 2), torch.zeros(1, 1, 3))


def test_validation_labels_follow_the_inference_rule():
    # voxel 0: nothing; 1: WT only -> ED; 2: WT+TC -> NCR; 3: all -> ET; 4: logit 0 (p = 0.5) is in,
    # as in inference (p >= threshold); one rule for training-time validation and prediction
    logits = torch.tensor([[-1, 1, 1, 1, 0], [-1, -1, 1, 1, 0], [-1, -1, -1, 1, 0]], dtype=torch.float32) * BIG
    probs = logits_to_probabilities(logits[..., None, None], "regions")
    assert probabilities_to_labels(probs, "regions")[:, 0, 0].tolist() == [0, 2, 1, 3, 3]
    label_logits = one_hot(torch.tensor([[3, 0]]))[0] * BIG  # (4, 2)
    label_probs = logits_to_probabilities(label_logits[..., None, None], "labels")
    assert probabilities_to_labels(label_probs, "labels")[:, 0, 0].tolist() == [3, 0]
    assert output_channels("regions") == 3 and output_channels("labels") == 4
