"""The 3D U-Net of Isensee et al. 2017 ("Brain tumor segmentation and radiomics survival
prediction: contribution to the BRATS 2017 challenge", arXiv:1802.10508).

Encoder: per level a 3x3x3 convolution (stride 2 below the first level) followed by a *context
module*, a pre-activation residual block; the level's output, normalised and activated, is both
the skip and the input of the next stride-2 convolution. Decoder: *upsampling modules* (nearest
x2 upscale then a 3x3x3 conv that halves the features), concatenation with the skip,
*localization modules* (3x3x3 conv keeping the 2F concatenated features, then a 1x1x1 conv
halving them to F) and, at the top level, one 3x3x3 conv.

Multi-scale segmentation-layer summation (``seg_layer_sum``): segmentation layers (1x1x1 convs)
read the 3x3x3 conv outputs of the three highest-resolution decoder levels; the coarser maps are
upsampled (nearest) and added level by level into the single full-resolution output. The paper
calls this "deep supervision", but no auxiliary loss is attached to the coarser layers: the loss
sees only the summed output, and the network returns one tensor.

Layout follows the authors' Lasagne code (MIC-DKFZ/BraTS2017 ``network_architecture.py``),
including the extra 1x1x1 conv after the first upsampling. One deliberate difference: the
first level's context module has instance norms like every other level (the official code
leaves them out there).
"""

from __future__ import annotations

import torch
from torch import nn

from glioseg.networks.blocks import ConvNormAct, NormAct, Upsample, check_input, conv3d


class ContextModule(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(drop(conv(act(norm(x))))))).

    Shape preserving: ``(B, C, X, Y, Z)`` -> ``(B, C, X, Y, Z)``.
    """

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            NormAct(channels), conv3d(channels, channels), nn.Dropout(dropout),
            NormAct(channels), conv3d(channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum of the block input and its two-convolution body."""
        return x + self.body(x)


class UpsamplingModule(nn.Sequential):
    """Nearest x2 upscale -> 3x3x3 conv -> norm -> LeakyReLU (the first one, fed by the bottleneck,
    adds a 1x1x1 conv -> norm -> LeakyReLU as in the official code).

    Shapes: ``(B, in_channels, X, Y, Z)`` -> ``(B, out_channels, 2X, 2Y, 2Z)``.
    """

    def __init__(self, in_channels: int, out_channels: int, extra_1x1: bool = False) -> None:
        layers: list[nn.Module] = [Upsample(), ConvNormAct(in_channels, out_channels, 3)]
        if extra_1x1:
            layers.append(ConvNormAct(out_channels, out_channels, 1))
        super().__init__(*layers)


class Isensee2017UNet(nn.Module):
    """Isensee et al. 2017 BraTS 3D U-Net.

    Shape contract: input ``(B, in_channels, X, Y, Z)`` float with X, Y, Z multiples of
    ``2 ** (depth - 1)`` (16 for the default depth 5); output logits
    ``(B, out_channels, X, Y, Z)`` in the input's dtype (or the autocast dtype).

    Args:
        in_channels: input modalities (4: t1, t1ce, t2, flair).
        out_channels: 3 for regions (WT, TC, ET, sigmoid) or 4 for labels (softmax).
        base_filters: features at the first level; level ``l`` has ``base_filters * 2**l``.
        depth: number of resolution levels (5 in the paper: 16, 32, 64, 128, 256 features).
        dropout: dropout probability inside the context modules (0.3 in the paper).
        seg_layer_sum: sum the (upsampled) segmentation layers of the three highest-resolution
            decoder levels into the output, as in the paper; False uses the top level's layer only.
            There are no auxiliary losses either way (see the module docstring).
        segmentation_levels: how many decoder levels feed the summed output.

    Raises:
        ValueError: invalid hyper-parameters.
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 3, base_filters: int = 16,
                 depth: int = 5, dropout: float = 0.3, seg_layer_sum: bool = True,
                 segmentation_levels: int = 3) -> None:
        super().__init__()
        _check_hparams(in_channels, out_channels, base_filters, depth, dropout, segmentation_levels)
        self.in_channels, self.out_channels, self.depth = in_channels, out_channels, depth
        self.n_seg = min(segmentation_levels, depth - 1) if seg_layer_sum else 1
        f = [base_filters * 2**level for level in range(depth)]
        self.down = nn.ModuleList([conv3d(in_channels, f[0])] +
                                  [conv3d(f[i - 1], f[i], stride=2) for i in range(1, depth)])
        self.context = nn.ModuleList([ContextModule(c, dropout) for c in f])
        self.skip_act = nn.ModuleList([NormAct(c) for c in f])
        self.up = nn.ModuleList([UpsamplingModule(f[i + 1], f[i], extra_1x1=i == depth - 2)
                                 for i in range(depth - 1)])
        # localization module of level i = localize[i] (3x3x3, 2F -> 2F) + reduce[i - 1] (1x1x1, 2F -> F)
        self.localize = nn.ModuleList([ConvNormAct(2 * c, 2 * c, 3) for c in f[:-1]])
        self.reduce = nn.ModuleList([ConvNormAct(2 * c, c, 1) for c in f[1:-1]])
        self.seg = nn.ModuleList([conv3d(2 * f[i], out_channels, 1) for i in range(self.n_seg)])
        self.upsample = Upsample()

    @property
    def divisor(self) -> int:
        """Every spatial input size must be a multiple of this."""
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            x: ``(B, in_channels, X, Y, Z)`` float, spatial sizes multiples of :attr:`divisor`.

        Returns:
            Logits ``(B, out_channels, X, Y, Z)``.

        Raises:
            ValueError: wrong ndim, channel count or spatial size (including an input so small
                that the bottleneck has a single voxel).
        """
        check_input(x, self.in_channels, self.divisor, type(self).__name__)
        if all(s == self.divisor for s in x.shape[2:]):
            raise ValueError(f"Isensee2017UNet: input {tuple(x.shape[2:])} leaves one voxel at the "
                             "bottleneck, where instance normalisation is undefined; use at least "
                             f"{2 * self.divisor} voxels along one axis")
        skips = self._encode(x)
        seg_outputs = self._decode(skips)
        out = seg_outputs[self.n_seg - 1]
        for level in range(self.n_seg - 2, -1, -1):  # segmentation-layer summation, coarse to fine
            out = self.upsample(out) + seg_outputs[level]
        return out

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per level the activated context-module output ``(B, f_l, X/2**l, ...)``; the last is the bottleneck."""
        skips: list[torch.Tensor] = []
        for level in range(self.depth):
            x = self.down[level](x if level == 0 else skips[-1])
            skips.append(self.skip_act[level](self.context[level](x)))
        return skips

    def _decode(self, skips: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        """Segmentation-layer outputs ``(B, out_channels, X/2**l, ...)`` of the ``n_seg`` finest levels ``l``."""
        x = skips[-1]
        seg_outputs: dict[int, torch.Tensor] = {}
        for level in range(self.depth - 2, -1, -1):
            features = self.localize[level](torch.cat([skips[level], self.up[level](x)], dim=1))
            if level < self.n_seg:
                seg_outputs[level] = self.seg[level](features)
            if level > 0:
                x = self.reduce[level - 1](features)
        return seg_outputs


def _check_hparams(in_channels: int, out_channels: int, base_filters: int, depth: int,
                   dropout: float, segmentation_levels: int) -> None:
    """Raise ValueError for hyper-parameters that cannot build a network."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("base_filters", base_filters), ("segmentation_levels", segmentation_levels)):
        if value < 1:
            raise ValueError(f"Isensee2017UNet: {name} must be >= 1, got {value}")
    if depth < 2:
        raise ValueError(f"Isensee2017UNet: depth must be >= 2, got {depth}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"Isensee2017UNet: dropout must be in [0, 1), got {dropout}")
