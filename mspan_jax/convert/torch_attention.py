"""PyTorch references of the block attentions (NCHW): MSPA, CA and RFDN's ESA, with the Flax
modules' parameter names (`mspan_jax/models/attention.py`)."""

from __future__ import annotations

import torch
from torch import nn

from mspan_jax.convert.torch_layers import conv_layer, lrelu


class MSPA(nn.Module):
    """Multi-semantic pixel attention: channel_down, spatial_down + AvgPool2d(2) / AvgPool2d(4),
    `interactions` x [context{k}_quarter, context{k}_half, fuse{k}_half, fuse{k}_full], channel_up."""

    def __init__(self, channels: int, reduction: int = 4, interactions: int = 2):
        super().__init__()
        f = max(1, channels // reduction)
        self.interactions = interactions
        self.channel_down = conv_layer(channels, f, 1)
        self.spatial_down = conv_layer(f, f, 3)
        self.pool_half, self.pool_quarter = nn.AvgPool2d(2), nn.AvgPool2d(4)
        for k in range(1, interactions + 1):
            setattr(self, f"context{k}_quarter", conv_layer(f, f, 3))
            setattr(self, f"context{k}_half", conv_layer(f, f, 3))
            setattr(self, f"fuse{k}_half", conv_layer(2 * f, f, 1))
            setattr(self, f"fuse{k}_full", conv_layer(2 * f, f, 1))
        self.channel_up = conv_layer(f, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = self.channel_down(x)
        down = self.spatial_down(full)
        half, quarter = self.pool_half(down), self.pool_quarter(down)
        for k in range(1, self.interactions + 1):
            quarter = lrelu(getattr(self, f"context{k}_quarter")(quarter))
            half = lrelu(getattr(self, f"context{k}_half")(half))
            up = nn.functional.interpolate(quarter, size=half.shape[2:], mode="bilinear",
                                           align_corners=False)
            half = lrelu(getattr(self, f"fuse{k}_half")(torch.cat([half, up], dim=1)))
            up = nn.functional.interpolate(half, size=x.shape[2:], mode="bilinear", align_corners=False)
            full = lrelu(getattr(self, f"fuse{k}_full")(torch.cat([full, up], dim=1)))
        return x * self.sigmoid(self.channel_up(full))


class CA(nn.Module):
    """RCAN's channel attention (pool, squeeze, ReLU, excite, sigmoid)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.squeeze = conv_layer(channels, max(1, channels // reduction), 1)
        self.excite = conv_layer(max(1, channels // reduction), channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.excite(torch.relu(self.squeeze(self.pool(x)))))


class ESA(nn.Module):
    """RFDN's enhanced spatial attention (its layer names and forward)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        f = max(1, channels // reduction)
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)
        self.max_pool = nn.MaxPool2d(7, 3)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_range = torch.relu(self.conv_max(self.max_pool(c1)))
        c3 = self.conv3_(torch.relu(self.conv3(v_range)))
        c3 = nn.functional.interpolate(c3, size=x.shape[2:], mode="bilinear", align_corners=False)
        return x * self.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


def block_attention(kind: str, channels: int, reduction: int, ca_reduction: int,
                    interactions: int) -> nn.Module | None:
    """The IDDB's attention of `kind` ("none", "ca", "esa", "mspa")."""
    if kind == "mspa":
        return MSPA(channels, reduction, interactions)
    if kind == "ca":
        return CA(channels, ca_reduction)
    if kind == "esa":
        return ESA(channels, reduction)
    if kind == "none":
        return None
    raise ValueError(f"config.model.attention={kind!r}; choose none, ca, esa or mspa")
