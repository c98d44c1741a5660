"""RandomChannelCNR: a chosen channel keeps its mean and sd inside the brain while its tumour
contrast shrinks by the drawn factor (another scanner's low-contrast FLAIR/T2); background,
labels and unchosen channels are untouched; the default pipeline is unchanged without it."""

from __future__ import annotations

import pytest
import torch

from glioseg.config import ConfigError, StageConfig
from glioseg.training.augment import default_augmentation
from glioseg.training.intensity import RandomChannelCNR
from glioseg.training.randomness import seed_generator


def brain_batch(shape=(40, 40, 32)) -> dict:
    """A z-scored-like brain (ellipsoid, zero outside) with a bright tumour in every channel."""
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    brain = ((x - 20) / 18) ** 2 + ((y - 20) / 18) ** 2 + ((z - 16) / 14) ** 2 < 1
    tumour = ((x - 14) / 6) ** 2 + ((y - 22) / 6) ** 2 + ((z - 16) / 6) ** 2 < 1
    g = torch.Generator().manual_seed(0)
    image = torch.randn((4, *shape), generator=g) * 0.4 + 2.8 * tumour
    image = torch.where(brain, image, torch.zeros(()))
    label = tumour.to(torch.uint8) * 2
    return {"image": image[None], "label": label[None]}, brain, tumour


def cnr(channel: torch.Tensor, brain: torch.Tensor, tumour: torch.Tensor) -> float:
    normal = brain & ~tumour
    return float((channel[tumour].mean() - channel[normal].mean()) / channel[normal].std())


def test_contrast_shrinks_by_the_factor_statistics_and_background_stay():
    batch, brain, tumour = brain_batch()
    out = RandomChannelCNR(factor=(0.3, 0.3), sigma=(1.0, 1.0), p=1.0)(batch, seed_generator(0))
    image, new = batch["image"][0], out["image"][0]
    assert torch.equal(out["label"], batch["label"])
    for c in range(4):
        gap = new[c][tumour].mean() - new[c][brain & ~tumour].mean()
        old_gap = image[c][tumour].mean() - image[c][brain & ~tumour].mean()
        assert float(gap / old_gap) == pytest.approx(0.3, abs=0.1)  # the tumour contrast x f (+- blurred noise)
        assert float(new[c][brain].mean()) == pytest.approx(float(image[c][brain].mean()), abs=1e-4)
        assert float(new[c][brain].std()) == pytest.approx(float(image[c][brain].std()), rel=0.05)
        assert cnr(new[c], brain, tumour) < 0.5 * cnr(image[c], brain, tumour)
        assert torch.all(new[c][~brain] == 0)


def test_channels_are_chosen_independently_and_p0_or_factor1_is_identity():
    batch, _, _ = brain_batch()
    changed = set()
    for seed in range(20):
        out = RandomChannelCNR(p=0.5)(batch, seed_generator(seed))["image"][0]
        changed |= {c for c in range(4) if not torch.equal(out[c], batch["image"][0][c])}
    assert changed == {0, 1, 2, 3}
    assert torch.equal(RandomChannelCNR(p=0.0)(batch, seed_generator(0))["image"], batch["image"])
    same = RandomChannelCNR(factor=(1.0, 1.0), p=1.0)(batch, seed_generator(0))["image"]
    assert torch.equal(same, batch["image"])
    a = RandomChannelCNR(p=0.5)(batch, seed_generator(3))["image"]
    assert torch.equal(a, RandomChannelCNR(p=0.5)(batch, seed_generator(3))["image"])  # deterministic


def test_pipeline_includes_it_only_when_asked_and_bad_values_are_refused():
    names = [type(t).__name__ for t in default_augmentation().transforms]
    assert "RandomChannelCNR" not in names
    with_cnr = default_augmentation(cnr=0.2).transforms
    assert [type(t).__name__ for t in with_cnr if type(t).__name__ not in names] == ["RandomChannelCNR"]
    assert next(t for t in with_cnr if isinstance(t, RandomChannelCNR)).channel_p == 0.2
    with pytest.raises(ValueError, match="factor"):
        RandomChannelCNR(factor=(0.5, 1.5))
    with pytest.raises(ValueError, match="probability"):
        RandomChannelCNR(p=2.0)
    with pytest.raises(ConfigError, match="augment_cnr must be in"):
        StageConfig(augment_cnr=1.5)
    assert StageConfig().augment_cnr == 0.0
