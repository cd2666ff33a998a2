"""PyTorch reference of IMDN (NCHW, inputs in [0, 1]): the official `Zheng222/IMDN` model/block.py and
model/architecture.py, with their state_dict names, so the official weights load strictly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mspan_jax.convert.torch_layers import LRELU_SLOPE, conv_layer, lrelu


def mean_channels(x: torch.Tensor) -> torch.Tensor:
    return x.sum(3, keepdim=True).sum(2, keepdim=True) / (x.size(2) * x.size(3))


def stdv_channels(x: torch.Tensor) -> torch.Tensor:
    variance = (x - mean_channels(x)).pow(2).sum(3, keepdim=True).sum(2, keepdim=True)
    return (variance / (x.size(2) * x.size(3))).pow(0.5)


class CCALayer(nn.Module):
    """Contrast-aware channel attention (`conv_du.0` / `conv_du.2`)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, padding=0, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, padding=0, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(stdv_channels(x) + self.avg_pool(x))


class IMDModule(nn.Module):
    """The information multi-distillation block (c1..c5, cca)."""

    def __init__(self, in_channels: int, distillation_rate: float = 0.25, cca_reduction: int = 16):
        super().__init__()
        self.distilled_channels = int(in_channels * distillation_rate)
        self.remaining_channels = int(in_channels - self.distilled_channels)
        self.c1 = conv_layer(in_channels, in_channels, 3)
        self.c2 = conv_layer(self.remaining_channels, in_channels, 3)
        self.c3 = conv_layer(self.remaining_channels, in_channels, 3)
        self.c4 = conv_layer(self.remaining_channels, self.distilled_channels, 3)
        self.c5 = conv_layer(self.distilled_channels * 4, in_channels, 1)
        self.cca = CCALayer(self.distilled_channels * 4, cca_reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = (self.distilled_channels, self.remaining_channels)
        d1, r1 = torch.split(lrelu(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(lrelu(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(lrelu(self.c3(r2)), split, dim=1)
        out = torch.cat([d1, d2, d3, self.c4(r3)], dim=1)
        return self.c5(self.cca(out)) + x


class DistillationFrame(nn.Module):
    """IMDN's frame around its blocks, which RFDN keeps: fea_conv -> `{prefix}1..M` -> c (1x1 +
    LReLU over every block's output) -> LR_conv + skip -> upsampler (conv + shuffle)."""

    def __init__(self, in_nc: int, nf: int, out_nc: int, upscale: int, blocks: Sequence[nn.Module],
                 prefix: str):
        super().__init__()
        self.fea_conv = conv_layer(in_nc, nf, 3)
        self.block_names = [f"{prefix}{i}" for i in range(1, len(blocks) + 1)]
        for name, block in zip(self.block_names, blocks, strict=True):
            setattr(self, name, block)
        self.c = nn.Sequential(conv_layer(nf * len(blocks), nf, 1),
                               nn.LeakyReLU(LRELU_SLOPE, inplace=True))
        self.LR_conv = conv_layer(nf, nf, 3)
        self.upsampler = nn.Sequential(conv_layer(nf, out_nc * upscale**2, 3), nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        h, outs = fea, []
        for name in self.block_names:
            h = getattr(self, name)(h)
            outs.append(h)
        return self.upsampler(self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea)


class IMDN(DistillationFrame):
    """fea_conv -> IMDB1..M -> c (1x1 + LReLU) -> LR_conv + skip -> upsampler (conv + shuffle)."""

    def __init__(self, in_nc: int = 3, nf: int = 64, num_modules: int = 6, out_nc: int = 3,
                 upscale: int = 4, distill_rate: float = 0.25, cca_reduction: int = 16):
        blocks = [IMDModule(nf, distill_rate, cca_reduction) for _ in range(num_modules)]
        super().__init__(in_nc, nf, out_nc, upscale, blocks, "IMDB")


def build(model_config: Mapping[str, Any]) -> IMDN:
    """The reference of a `config.model` section of IMDN."""
    cfg = model_config
    return IMDN(cfg["in_channels"], cfg["num_features"], cfg["num_modules"], cfg["out_channels"],
                cfg["scale"], cfg["distill_rate"], cfg["cca_reduction"])
