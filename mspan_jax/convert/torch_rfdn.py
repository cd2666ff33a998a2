"""PyTorch reference of RFDN (NCHW, pixel values in 0..255 as the authors' released weights take
them): the network of `njulj/RFDN` (RFDN.py, block.py), with its state_dict names, so
RFDN_AIM.pth loads strictly. The Flax `mspan_jax.models.rfdn.RFDN` is this on [0, 1]."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mspan_jax.convert.torch_attention import ESA
from mspan_jax.convert.torch_imdn import DistillationFrame
from mspan_jax.convert.torch_layers import conv_layer, lrelu


class RFDB(nn.Module):
    """Residual feature distillation block: c{k}_d (1x1 to C/2, LReLU) beside c{k}_r (3x3, LReLU of
    conv + input) for k = 1..3, c4 (3x3 to C/2, LReLU), c5 (1x1 over the four C/2 parts), ESA."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        for k in (1, 2, 3):
            setattr(self, f"c{k}_d", conv_layer(channels, half, 1))
            setattr(self, f"c{k}_r", conv_layer(channels, channels, 3))
        self.c4 = conv_layer(channels, half, 3)
        self.c5 = conv_layer(4 * half, channels, 1)
        self.esa = ESA(channels, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts, h = [], x
        for k in (1, 2, 3):
            parts.append(lrelu(getattr(self, f"c{k}_d")(h)))
            h = lrelu(getattr(self, f"c{k}_r")(h) + h)
        parts.append(lrelu(self.c4(h)))
        return self.esa(self.c5(torch.cat(parts, dim=1)))


class RFDN(DistillationFrame):
    """IMDN's frame around RFDBs: fea_conv -> B1..M -> c (1x1 + LReLU) -> LR_conv + skip ->
    upsampler (conv + shuffle)."""

    def __init__(self, in_nc: int = 3, nf: int = 50, num_modules: int = 4, out_nc: int = 3,
                 upscale: int = 4):
        super().__init__(in_nc, nf, out_nc, upscale, [RFDB(nf) for _ in range(num_modules)], "B")


def build(model_config: Mapping[str, Any]) -> RFDN:
    """The reference of a `config.model` section of RFDN."""
    cfg = model_config
    return RFDN(cfg["in_channels"], cfg["num_features"], cfg["num_modules"], cfg["out_channels"],
                cfg["scale"])
