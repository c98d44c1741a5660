"""Networks: output shapes, input errors, parameter counts from the architecture, registry."""

from __future__ import annotations

import pytest
import torch

from glioseg.networks import Isensee2017UNet, UNet3D, build_model, count_parameters


def conv(k: int, a: int, b: int) -> int:
    return k**3 * a * b + b  # weights + bias


def norm(c: int) -> int:
    return 2 * c  # affine instance/batch norm


def isensee_parameters(cin: int, cout: int, base: int, depth: int, n_seg: int) -> int:
    """Parameter count of the Isensee 2017 U-Net written out from the paper's modules."""
    f = [base * 2**level for level in range(depth)]
    total = conv(3, cin, f[0]) + sum(conv(3, f[i - 1], f[i]) for i in range(1, depth))  # stem + stride-2
    total += sum(2 * norm(c) + 2 * conv(3, c, c) for c in f)  # context modules
    total += sum(norm(c) for c in f)  # activation of each level's output (skip / next level)
    total += sum(conv(3, f[i + 1], f[i]) + norm(f[i]) for i in range(depth - 1))  # upsampling modules
    total += conv(1, f[-2], f[-2]) + norm(f[-2])  # 1x1x1 after the first upsampling (official code)
    total += sum(conv(3, 2 * c, 2 * c) + norm(2 * c) for c in f[:-1])  # localization 3x3x3 (top: the final conv)
    total += sum(conv(1, 2 * c, c) + norm(c) for c in f[1:-1])  # localization 1x1x1 halving
    return total + sum(conv(1, 2 * f[i], cout) for i in range(n_seg))  # segmentation layers


def unet_parameters(cin: int, cout: int, base: int, depth: int) -> int:
    outs = [base * 2 ** (level + 1) for level in range(depth)]
    total, prev = 0, cin
    for c in outs:
        total += conv(3, prev, c // 2) + norm(c // 2) + conv(3, c // 2, c) + norm(c)
        prev = c
    for i in range(depth - 1):
        total += 8 * outs[i + 1] ** 2 + outs[i + 1]  # 2x2x2 transposed conv
        total += conv(3, outs[i] + outs[i + 1], outs[i]) + norm(outs[i]) + conv(3, outs[i], outs[i]) + norm(outs[i])
    return total + conv(1, outs[0], cout)


@pytest.mark.parametrize("base,depth,summed,out", [(16, 5, True, 3), (8, 4, True, 4), (4, 3, False, 3)])
def test_isensee_parameter_count(base, depth, summed, out, capsys):
    model = Isensee2017UNet(4, out, base, depth, seg_layer_sum=summed)
    expected = isensee_parameters(4, out, base, depth, min(3, depth - 1) if summed else 1)
    n = count_parameters(model)
    with capsys.disabled():
        print(f"\nIsensee2017UNet(base={base}, depth={depth}, seg_layer_sum={summed}, out={out}): {n:,} parameters")
    assert n == expected


def test_paper_configuration_size():
    # 16..256 filters; the paper's network has a few million parameters (9.5 M with affine norms)
    assert count_parameters(Isensee2017UNet()) == isensee_parameters(4, 3, 16, 5, 3) == 9_483_625


def test_unet_parameter_count():
    assert count_parameters(UNet3D(4, 3, 8, 3)) == unet_parameters(4, 3, 8, 3)


@pytest.mark.parametrize("shape", [(1, 4, 32, 16, 16), (2, 4, 32, 16, 48)])
def test_isensee_output_shape(shape):
    model = Isensee2017UNet(base_filters=4).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], 3, *shape[2:]) and out.dtype == torch.float32


def test_unet_output_shape():
    model = UNet3D(4, 4, base_filters=4, depth=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 4, 8, 16, 24)).shape == (1, 4, 8, 16, 24)


def test_seg_layer_sum_adds_three_levels_into_one_output():
    model = Isensee2017UNet(base_filters=4, depth=4).eval()
    assert len(model.seg) == 3
    torch.nn.init.zeros_(model.seg[1].weight)
    torch.nn.init.constant_(model.seg[1].bias, 1.0)  # a constant coarse map shifts every output voxel by 1
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        with_bias = model(x)
        torch.nn.init.zeros_(model.seg[1].bias)
        without = model(x)
    torch.testing.assert_close(with_bias - without, torch.ones_like(with_bias))
    assert isinstance(with_bias, torch.Tensor)  # one output: no auxiliary heads, no auxiliary losses
    assert len(Isensee2017UNet(base_filters=4, depth=4, seg_layer_sum=False).seg) == 1


def test_config_names_the_summation_and_refuses_the_old_key(tmp_path):
    from glioseg.config import ConfigError, ModelConfig, load_config

    assert ModelConfig().kwargs(3)["seg_layer_sum"] is True
    path = tmp_path / "old.yaml"
    path.write_text("stages:\n  - name: main\n    model: {deep_supervision: true}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['deep_supervision'\].*deep_supervision is now called "
                                          r"seg_layer_sum"):
        load_config(path)


@pytest.mark.parametrize("model", [Isensee2017UNet(base_filters=2, depth=3), UNet3D(base_filters=2, depth=3)])
@pytest.mark.parametrize("shape,match", [
    ((4, 16, 16, 16), "5-D input"),
    ((1, 3, 16, 16, 16), "expected 4 input channels"),
    ((1, 4, 16, 18, 16), "not a multiple of 4"),
])
def test_invalid_inputs(model, shape, match):
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(shape))


@pytest.mark.parametrize("kwargs,match", [({"depth": 1}, "depth"), ({"dropout": 1.0}, "dropout"),
                                          ({"base_filters": 0}, "base_filters")])
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Isensee2017UNet(**kwargs)


def test_single_voxel_bottleneck_is_refused():
    with pytest.raises(ValueError, match=r"one voxel at the bottleneck.*at least 32"):
        Isensee2017UNet(base_filters=2)(torch.zeros(1, 4, 16, 16, 16))


def test_registry():
    assert isinstance(build_model("isensee2017", base_filters=2, depth=3), Isensee2017UNet)
    assert isinstance(build_model("unet3d", base_filters=2, depth=2), UNet3D)
    with pytest.raises(ValueError, match=r"unknown model 'vnet'.*isensee2017.*unet3d"):
        build_model("vnet")
    with pytest.raises(ValueError, match="model 'unet3d'"):
        build_model("unet3d", dropout=0.3)


def test_bf16_autocast_forward():
    model = Isensee2017UNet(base_filters=2, depth=3).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 4, 8, 8, 8))
    assert out.shape == (1, 3, 8, 8, 8) and torch.isfinite(out.float()).all()
