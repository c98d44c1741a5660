"""Augmentation (augment, spatial, intensity): image and label stay aligned, determinism, intensity effects."""

from __future__ import annotations

import pytest
import torch

from glioseg.training.augment import Compose, default_augmentation
from glioseg.training.intensity import (
    RandomBlur,
    RandomBrightness,
    RandomContrast,
    RandomGamma,
    RandomLowRes,
    RandomNoise,
    gaussian_blur,
)
from glioseg.training.randomness import seed_generator
from glioseg.training.spatial import RandomFlip, RandomSpatial, resample_with_grid

THRESHOLD = 0.5


def blob_batch(batch_size: int = 2, shape=(32, 28, 24)) -> dict:
    """An off-centre smooth blob in channel 0 (asymmetric, so a wrong flip/rotation shows) and
    its thresholded label."""
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    d = ((x - 11) / 7) ** 2 + ((y - 9) / 5) ** 2 + ((z - 14) / 6) ** 2
    blob = torch.exp(-d)  # smooth: values near the threshold only at the edge
    image = torch.stack([blob, 0.5 * blob, x / shape[0], torch.ones(shape)])
    image = image[None].repeat(batch_size, 1, 1, 1, 1)
    label = (image[:, 0] > THRESHOLD).to(torch.uint8) * 3
    return {"image": image, "label": label}


def agreement(batch: dict) -> float:
    """Share of voxels where the label equals the threshold of the (augmented) image."""
    derived = (batch["image"][:, 0] > THRESHOLD).to(torch.uint8) * 3
    return (derived == batch["label"]).float().mean().item()


SPATIAL = [
    RandomSpatial(rotation_deg=30, p_rotation=1, p_scale=0, p_elastic=0),
    RandomSpatial(scale=(0.7, 1.3), p_rotation=0, p_scale=1, p_elastic=0),
    RandomSpatial(elastic_magnitude=(2, 3), elastic_spacing=8, p_rotation=0, p_scale=0, p_elastic=1),
    RandomSpatial(p_rotation=1, p_scale=1, p_elastic=1, label_mode="onehot"),
    RandomFlip(p=1.0),
    RandomFlip(axes=(1,), p=1.0),
]


@pytest.mark.parametrize("transform", SPATIAL, ids=lambda t: type(t).__name__)
def test_spatial_transforms_keep_image_and_label_aligned(transform):
    batch = blob_batch()
    out = transform(batch, seed_generator(1))
    assert out["image"].shape == batch["image"].shape and out["label"].shape == batch["label"].shape
    assert out["label"].dtype == torch.uint8
    assert not torch.equal(out["label"], batch["label"])  # the transform did move things
    assert agreement(out) > 0.99
    # a label that was not moved with the image would disagree much more
    assert agreement({"image": out["image"], "label": batch["label"]}) < agreement(out) - 0.005


def test_default_pipeline_keeps_alignment_and_is_deterministic():
    aug = default_augmentation()
    batch = blob_batch(4)
    a, b = aug(batch, seed_generator(7)), aug(batch, seed_generator(7))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    c = aug(batch, seed_generator(8))
    assert not torch.equal(a["image"], c["image"])
    spatial = Compose([t for t in aug.transforms if isinstance(t, RandomSpatial | RandomFlip)])
    assert agreement(spatial(batch, seed_generator(3))) > 0.99


def test_parameters_are_drawn_per_sample():
    batch = blob_batch(2)
    out = RandomSpatial(p_rotation=1, p_scale=1, p_elastic=1)(batch, seed_generator(0))
    assert not torch.equal(out["image"][0], out["image"][1])
    out = RandomGamma(p=1)(batch, seed_generator(0))
    assert not torch.equal(out["image"][0], out["image"][1])


def test_identity_spatial_and_grid_axis_order():
    batch = blob_batch(1)
    ident = RandomSpatial(rotation_deg=0, scale=(1, 1), elastic_magnitude=(0, 0), p_rotation=1, p_scale=1)
    out = ident(batch, seed_generator(0))
    assert torch.allclose(out["image"], batch["image"], atol=1e-5)
    assert torch.equal(out["label"], batch["label"])
    # coords[i, j, k] = (j, i, k): output must be the X/Y transpose of the input
    image = torch.arange(4 * 4 * 5, dtype=torch.float32).view(1, 4, 4, 5)
    label = (image[0] % 3).to(torch.uint8)
    j, i, k = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (4, 4, 5)), indexing="ij")
    coords = torch.stack([i, j, k], dim=-1)
    img, lab = resample_with_grid(image, label, coords)
    assert torch.allclose(img, image.transpose(1, 2)) and torch.equal(lab, label.transpose(0, 1))


def test_spatial_without_label():
    batch = {"image": blob_batch(1)["image"]}
    out = RandomSpatial(p_rotation=1)(batch, seed_generator(0))
    assert "label" not in out and out["image"].shape == batch["image"].shape


def test_intensity_transforms_leave_labels_and_shapes():
    batch = blob_batch(2)
    for t in (RandomGamma(p=1), RandomBrightness(p=1), RandomContrast(p=1), RandomNoise(p=1),
              RandomBlur(p=1), RandomLowRes(p=1)):
        out = t(batch, seed_generator(5))
        assert torch.equal(out["label"], batch["label"]), type(t).__name__
        assert out["image"].shape == batch["image"].shape
        assert not torch.equal(out["image"], batch["image"]), type(t).__name__
        assert torch.isfinite(out["image"]).all()
    assert torch.equal(RandomGamma(p=0)(batch, seed_generator(0))["image"], batch["image"])


def test_gamma_keeps_statistics_contrast_keeps_range():
    batch = {"image": torch.randn(1, 2, 16, 16, 16) * 2 + 1}
    out = RandomGamma(gamma=(0.5, 0.5), p=1)(batch, seed_generator(0))["image"]
    for c in range(2):
        assert torch.allclose(out[0, c].mean(), batch["image"][0, c].mean(), atol=1e-4)
        assert torch.allclose(out[0, c].std(), batch["image"][0, c].std(), atol=1e-4)
    out = RandomContrast(factor=(2, 2), p=1)(batch, seed_generator(0))["image"]
    assert out.max() <= batch["image"].max() and out.min() >= batch["image"].min()
    out = RandomBrightness(factor=(1.2, 1.2), p=1)(batch, seed_generator(0))["image"]
    assert torch.allclose(out, batch["image"] * 1.2)


def test_gaussian_blur_values():
    const = torch.full((1, 8, 8, 8), 3.0)
    assert torch.allclose(gaussian_blur(const, 1.0), const)
    impulse = torch.zeros(1, 15, 15, 15)
    impulse[0, 7, 7, 7] = 1.0
    out = gaussian_blur(impulse, 1.0)
    assert torch.isclose(out.sum(), torch.tensor(1.0), atol=1e-5)
    assert out[0, 7, 7, 7] == out.max() and torch.isclose(out[0, 6, 7, 7], out[0, 8, 7, 7])


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="scale"):
        RandomSpatial(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="label_mode"):
        RandomSpatial(label_mode="linear")
    with pytest.raises(ValueError, match="probability"):
        RandomGamma(p=1.5)
    with pytest.raises(ValueError, match="axes"):
        RandomFlip(axes=(3,))
    with pytest.raises(ValueError, match="zoom"):
        RandomLowRes(zoom=(0.5, 2.0))
