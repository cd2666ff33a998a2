"""The PyTorch layers every reference model shares (NCHW): IMDN's `conv_layer` and its LReLU."""

from __future__ import annotations

import torch
from torch import nn

LRELU_SLOPE = 0.05  # IMDN's activation('lrelu', neg_slope=0.05); RFDN's too


def conv_layer(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
               groups: int = 1) -> nn.Conv2d:
    """IMDN's `conv_layer`: stride 1, 'same' zero padding, bias."""
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Conv2d(in_channels, out_channels, kernel_size, 1, padding=padding, bias=True,
                     dilation=dilation, groups=groups)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.leaky_relu(x, LRELU_SLOPE)
