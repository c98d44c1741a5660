"""Plain 3D U-Net after Cicek et al. 2016 ("3D U-Net: learning dense volumetric segmentation
from sparse annotation", MICCAI), with padded convolutions so that output size = input size.

Per encoder level: two 3x3x3 conv-norm-ReLU units (the second doubles the features), then 2x2x2
max pooling. Decoder: 2x2x2 transposed convolution (stride 2), concatenation with the skip, two
3x3x3 conv-norm-ReLU units; a final 1x1x1 convolution gives the logits.
"""

from __future__ import annotations

import torch
from torch import nn

from glioseg.networks.blocks import ConvNormAct, check_input, conv3d


class UNet3D(nn.Module):
    """Cicek et al. 2016 3D U-Net (padded).

    Shape contract: input ``(B, in_channels, X, Y, Z)`` float with X, Y, Z multiples of
    ``2 ** (depth - 1)``; output logits ``(B, out_channels, X, Y, Z)``.

    Args:
        in_channels: input modalities.
        out_channels: output channels (3 regions or 4 labels).
        base_filters: features of the first conv (32 in the paper); level ``l`` ends with
            ``base_filters * 2 ** (l + 1)`` features.
        depth: resolution levels including the bottleneck (4 in the paper).
        norm: ``"batch"`` (paper) or ``"instance"``.

    Raises:
        ValueError: invalid hyper-parameters.
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 3, base_filters: int = 32,
                 depth: int = 4, norm: str = "batch") -> None:
        super().__init__()
        if depth < 2 or base_filters < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(f"UNet3D: need depth >= 2 and positive channels, got depth={depth}, "
                             f"base_filters={base_filters}, in={in_channels}, out={out_channels}")
        self.in_channels, self.depth = in_channels, depth
        outs = [base_filters * 2 ** (level + 1) for level in range(depth)]
        self.encoder = nn.ModuleList()
        prev = in_channels
        for c in outs:
            self.encoder.append(nn.Sequential(ConvNormAct(prev, c // 2, norm=norm, activation="relu"),
                                              ConvNormAct(c // 2, c, norm=norm, activation="relu")))
            prev = c
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList([nn.ConvTranspose3d(outs[i + 1], outs[i + 1], 2, stride=2)
                                 for i in range(depth - 1)])
        self.decoder = nn.ModuleList([
            nn.Sequential(ConvNormAct(outs[i] + outs[i + 1], outs[i], norm=norm, activation="relu"),
                          ConvNormAct(outs[i], outs[i], norm=norm, activation="relu"))
            for i in range(depth - 1)])
        self.head = conv3d(outs[0], out_channels, 1)

    @property
    def divisor(self) -> int:
        """Every spatial input size must be a multiple of this."""
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, X, Y, Z)`` -> logits ``(B, out_channels, X, Y, Z)``.

        Raises:
            ValueError: wrong ndim, channel count or spatial size.
        """
        check_input(x, self.in_channels, self.divisor, type(self).__name__)
        skips: list[torch.Tensor] = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(skips[-1]))
            skips.append(x)
        x = skips.pop()
        for level in range(self.depth - 2, -1, -1):
            x = self.decoder[level](torch.cat([skips[level], self.up[level](x)], dim=1))
        return self.head(x)
