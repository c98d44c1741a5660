import itertools

import pytest
import torch
from torch import nn

from glioseg.inference import sliding_window as inference
from glioseg.inference.ensemble import ALL_FLIPS, TilePredictor, mc_dropout, parse_flips, predict_volume, split_moments
from glioseg.inference.sliding_window import gaussian_importance, sliding_window_inference, tile_starts


class ConstantModel(nn.Module):
    """Logits equal to ``value`` everywhere; records the input shapes it saw."""

    def __init__(self, value: float, channels: int = 3) -> None:
        super().__init__()
        self.value, self.channels, self.shapes = value, channels, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return torch.full((x.shape[0], self.channels, *x.shape[2:]), self.value)


def constant_fn(value: float, calls: list | None = None):
    def fn(tiles: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append(tuple(tiles.shape))
        return torch.full((tiles.shape[0], 3, *tiles.shape[2:]), value)
    return fn


def identity_fn(tiles: torch.Tensor) -> torch.Tensor:
    return tiles.clone()


def symmetric_conv(seed: int = 0) -> nn.Module:
    """A 3x3x3 convolution whose kernels are symmetric under every axis flip (flip-equivariant)."""
    torch.manual_seed(seed)
    conv = nn.Conv3d(4, 3, 3, padding=1)
    with torch.no_grad():
        w = conv.weight
        conv.weight.copy_(sum(torch.flip(w, [a + 2 for a in f]) if f else w for f in ALL_FLIPS) / 8)
    return conv.eval()


SHAPES = [(20, 20, 20), (37, 50, 29), (9, 70, 33), (48, 40, 36)]


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.8])
@pytest.mark.parametrize("shape", SHAPES)
def test_constant_model_reconstructed_exactly(shape, overlap):
    image = torch.randn(4, *shape)
    # a power of two: every weighted sum is exact, so the stitched value must be bit-identical
    out = sliding_window_inference(image, constant_fn(0.25), (32, 32, 16), overlap=overlap, tile_batch=3)
    assert out.shape == (3, *shape) and out.dtype == torch.float32
    assert torch.equal(out, torch.full_like(out, 0.25))
    other = sliding_window_inference(image, constant_fn(0.3), (32, 32, 16), overlap=overlap, tile_batch=2)
    torch.testing.assert_close(other, torch.full_like(other, 0.3), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(10, 11, 7), (37, 50, 29)])
@pytest.mark.parametrize("window", [(16, 16, 16), (48, 16, 32)])
def test_identity_model_puts_every_tile_back_in_place(shape, window):
    image = torch.randn(4, *shape)
    out = sliding_window_inference(image, identity_fn, window, overlap=0.5, tile_batch=4)
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-6)


def test_whole_volume_mode_runs_once_on_divisor_multiple():
    calls: list = []
    image = torch.randn(4, 30, 17, 40)
    out = sliding_window_inference(image, constant_fn(0.5, calls), (48, 48, 48), divisor=16)
    assert calls == [(1, 4, 32, 32, 48)]  # padded to multiples of 16, not to the window
    assert out.shape == (3, 30, 17, 40)
    assert torch.equal(out, torch.full_like(out, 0.5))


def test_tiled_mode_tile_count_and_batches():
    calls: list = []
    image = torch.randn(4, 40, 32, 20)
    sliding_window_inference(image, constant_fn(0.5, calls), (16, 16, 16), overlap=0.5, tile_batch=4, divisor=16)
    n_tiles = len(tile_starts(40, 16, 0.5)) * len(tile_starts(32, 16, 0.5)) * len(tile_starts(20, 16, 0.5))
    assert sum(c[0] for c in calls) == n_tiles
    assert all(c[0] <= 4 and c[2:] == (16, 16, 16) for c in calls)


@pytest.mark.parametrize("window", [(16, 16, 16), (17, 24, 9), (128, 96, 80)])
def test_gaussian_symmetric_positive(window):
    g = gaussian_importance(window)
    assert g.shape == window and g.dtype == torch.float32
    assert bool((g > 0).all())
    assert g.max().item() == pytest.approx(1.0)
    for axes in ALL_FLIPS[1:]:
        assert torch.equal(g, torch.flip(g, list(axes)))


def test_gaussian_sigma_is_one_eighth_of_window():
    g = gaussian_importance((33, 33, 33))  # odd: a voxel at the exact centre
    sigma = 33 / 8
    # exp(-d^2 / 2 sigma^2) at d = 4 voxels from the centre along x
    assert g[16 + 4, 16, 16].item() == pytest.approx(float(torch.exp(torch.tensor(-0.5 * (4 / sigma) ** 2))), rel=1e-5)


@pytest.mark.parametrize("size,window,overlap", [(100, 32, 0.5), (33, 32, 0.0), (200, 64, 0.75), (32, 32, 0.5)])
def test_tile_starts_cover_with_overlap(size, window, overlap):
    starts = tile_starts(size, window, overlap)
    assert starts[0] == 0 and starts[-1] == size - window
    covered = set()
    for s in starts:
        covered |= set(range(s, s + window))
    assert covered == set(range(size))
    for a, b in itertools.pairwise(starts):
        assert window - (b - a) >= int(overlap * window) - 1


def test_parse_flips():
    assert parse_flips("none") == ((),)
    assert parse_flips(None) == ((),)
    assert parse_flips("all") == ALL_FLIPS and len(set(ALL_FLIPS)) == 8
    assert parse_flips(4) == ((), (0,), (1,), (2,))
    assert parse_flips("2") == ((), (0,))
    assert parse_flips([(2, 0), (0, 2), ()]) == ((0, 2), ())
    for bad in ("some", 9, [(3,)], []):
        with pytest.raises(ValueError):
            parse_flips(bad)


def test_tta_with_flip_equivariant_model_equals_no_tta():
    image = torch.randn(4, 24, 20, 18)
    conv = symmetric_conv()
    plain = TilePredictor([conv], "sigmoid", parse_flips("none"), precision="fp32")
    tta = TilePredictor([conv], "sigmoid", parse_flips("all"), precision="fp32")
    a = sliding_window_inference(image, plain, (16, 16, 16), overlap=0.5)
    b = sliding_window_inference(image, tta, (16, 16, 16), overlap=0.5)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_tta_changes_a_non_equivariant_model():
    torch.manual_seed(1)
    conv = nn.Conv3d(4, 3, 3, padding=1).eval()
    image = torch.randn(1, 4, 16, 16, 16)
    plain = TilePredictor([conv], "sigmoid", ((),), precision="fp32")(image)
    tta = TilePredictor([conv], "sigmoid", ALL_FLIPS, precision="fp32")(image)
    assert not torch.allclose(plain, tta, atol=1e-4)
    # by hand: the average over the 8 flips of flip^-1(sigmoid(conv(flip(x))))
    with torch.no_grad():
        manual = sum(torch.flip(torch.sigmoid(conv(torch.flip(image, [a + 2 for a in f]))), [a + 2 for a in f])
                     for f in ALL_FLIPS) / 8
    torch.testing.assert_close(tta, manual, rtol=1e-5, atol=1e-6)


def test_ensemble_averages_probabilities():
    image = torch.randn(1, 4, 16, 16, 16)
    out = TilePredictor([ConstantModel(0.0), ConstantModel(2.0)], "sigmoid", precision="fp32")(image)
    expected = (torch.sigmoid(torch.tensor(0.0)) + torch.sigmoid(torch.tensor(2.0))) / 2
    torch.testing.assert_close(out, torch.full_like(out, expected.item()))


def test_softmax_activation_sums_to_one():
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 4, 1).eval()
    out = TilePredictor([conv], "softmax", precision="fp32")(torch.randn(2, 4, 8, 8, 8))
    torch.testing.assert_close(out.sum(1), torch.ones(2, 8, 8, 8))


def test_tuple_output_uses_the_first_tensor():
    class Tuple(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 3, *x.shape[2:]), torch.ones(x.shape[0], 3, 4, 4, 4)

    out = TilePredictor([Tuple()], "sigmoid", precision="fp32")(torch.randn(1, 4, 8, 8, 8))
    torch.testing.assert_close(out, torch.full_like(out, 0.5))


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(4, 3, 1)
        self.drop = nn.Dropout3d(0.5)

    def forward(self, x):
        return self.conv(self.drop(x))


def test_mc_dropout_gives_uncertainty_and_restores_eval_mode():
    net = DropoutNet().eval()
    image = torch.randn(4, 20, 20, 20)
    plain = TilePredictor([net], "sigmoid", precision="fp32")
    a, unc = predict_volume(image, plain, (16, 16, 16), divisor=1)
    b, _ = predict_volume(image, plain, (16, 16, 16), divisor=1)
    assert unc is None and torch.equal(a, b)  # dropout off at inference by default
    torch.manual_seed(0)
    mc = TilePredictor([net], "sigmoid", precision="fp32", mc_samples=6)
    mean, unc = predict_volume(image, mc, (16, 16, 16), divisor=1)
    assert mean.shape == (3, 20, 20, 20) and unc.shape == (20, 20, 20)
    assert float(unc.max()) > 0.01 and float(unc.min()) >= 0.0
    assert not net.drop.training and not net.training


def test_mc_dropout_context_only_touches_dropout():
    net = DropoutNet().eval()
    with mc_dropout([net]):
        assert net.drop.training and not net.training and not net.conv.training
    assert not net.drop.training


def test_mc_dropout_without_dropout_layers_is_refused():
    with pytest.raises(ValueError, match="no dropout layer"):
        TilePredictor([nn.Conv3d(4, 3, 1)], "sigmoid", mc_samples=3)


def test_split_moments():
    mean = torch.tensor([[0.5]])
    stitched = torch.stack([mean, mean * mean + 0.04])
    m, s = split_moments(stitched)
    torch.testing.assert_close(m, mean[None])
    torch.testing.assert_close(s, torch.tensor([[[0.2]]]))


def test_bf16_close_to_fp32():
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 3, 3, padding=1).eval()
    image = torch.randn(1, 4, 16, 16, 16)
    a = TilePredictor([conv], "sigmoid", precision="fp32")(image)
    b = TilePredictor([conv], "sigmoid", precision="bf16")(image)
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=0.03, rtol=0)


def test_bad_inputs():
    fn = constant_fn(0.5)
    with pytest.raises(ValueError, match=r"\(C, X, Y, Z\)"):
        sliding_window_inference(torch.zeros(8, 8, 8), fn, (8, 8, 8))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(torch.zeros(1, 8, 8, 8), fn, (8, 8, 8), overlap=1.0)
    with pytest.raises(ValueError, match="tile_batch"):
        sliding_window_inference(torch.zeros(1, 8, 8, 8), fn, (8, 8, 8), tile_batch=0)
    with pytest.raises(ValueError, match="window"):
        sliding_window_inference(torch.zeros(1, 8, 8, 8), fn, (8, 8))
    with pytest.raises(ValueError, match="fp16"):
        TilePredictor([ConstantModel(0.0)], precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="activation"):
        TilePredictor([ConstantModel(0.0)], activation="relu")


def test_cuda_out_of_memory_falls_back_to_cpu_stitching(monkeypatch):
    seen = []
    real = inference._stitch

    def fake_stitch(*args):
        out_dev = args[-1]
        seen.append(out_dev.type)
        if out_dev.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args)

    monkeypatch.setattr(inference, "_stitch", fake_stitch)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    out = sliding_window_inference(torch.randn(4, 20, 20, 20), constant_fn(0.25), (16, 16, 16),
                                   device="cpu", output_device="cuda")
    assert seen == ["cuda", "cpu"]
    assert out.device.type == "cpu" and torch.equal(out, torch.full_like(out, 0.25))


def test_all_flip_combinations_distinct():
    assert len(ALL_FLIPS) == 8
    assert set(ALL_FLIPS) == {c for n in range(4) for c in itertools.combinations((0, 1, 2), n)}
