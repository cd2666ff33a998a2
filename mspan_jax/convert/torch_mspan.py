"""PyTorch reference of the paper's MSPAN family (NCHW, inputs in [0, 1]): MSPA, CA, ESA, IDDB, BLF,
MSPAN and MSPAN-IR (figure (c)), with the Flax modules' parameter names, so converted weights give the
same outputs (`torch_reference.build_torch_model` builds them; PyTorch is the optional [torch] extra)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mspan_jax.convert.torch_reference import conv_layer, lrelu


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


class IDDB(nn.Module):
    """Information distillation dense block: AU{j} (1x1 over [h, earlier distilled parts] to
    C + distilled), CU{j} (3x3 on the remaining C), `fuse` (1x1 over [distilled parts, last CU]),
    then the block attention (attribute named by its kind) and the residual."""

    def __init__(self, channels: int, num_units: int = 3, distill_rate: float = 0.5,
                 attention: str = "mspa", reduction: int = 4, ca_reduction: int = 16,
                 interactions: int = 2):
        super().__init__()
        self.num_units = num_units
        self.distilled = round(channels * distill_rate)
        for j in range(1, num_units + 1):
            setattr(self, f"AU{j}", conv_layer(channels + (j - 1) * self.distilled,
                                               channels + self.distilled, 1))
            setattr(self, f"CU{j}", conv_layer(channels, channels, 3))
        self.fuse = conv_layer(num_units * self.distilled + channels, channels, 1)
        self.attention_name = attention
        module = block_attention(attention, channels, reduction, ca_reduction, interactions)
        if module is not None:
            setattr(self, attention, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, passed = x, []
        for j in range(1, self.num_units + 1):
            a = lrelu(getattr(self, f"AU{j}")(torch.cat([h, *passed], dim=1)))
            passed.append(a[:, : self.distilled])
            h = lrelu(getattr(self, f"CU{j}")(a[:, self.distilled:]))
        out = self.fuse(torch.cat([*passed, h], dim=1))
        if self.attention_name != "none":
            out = getattr(self, self.attention_name)(out)
        return out + x


class BLF(nn.Module):
    """Backward fusion: T_n = F_n, T_i = cat(ReLU(proj_f{i}(F_i)), ReLU(proj_t{i}(T_{i+1})))."""

    def __init__(self, channels: int, num_blocks: int):
        super().__init__()
        half = channels // 2
        for i in range(1, num_blocks):
            setattr(self, f"proj_f{i}", conv_layer(channels, half, 1))
            setattr(self, f"proj_t{i}", conv_layer(channels, channels - half, 1))

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        t = blocks[-1]
        for i in range(len(blocks) - 1, 0, -1):
            t = torch.cat([torch.relu(getattr(self, f"proj_f{i}")(blocks[i - 1])),
                           torch.relu(getattr(self, f"proj_t{i}")(t))], dim=1)
        return t


class _MSPANTrunk(nn.Module):
    """fea_conv (F_0), IDDB1..n (F_1..F_n), blf (T_1); features() = T_1 + F_0."""

    def __init__(self, in_nc: int, nf: int, num_blocks: int, num_units: int, distill_rate: float,
                 attention: str, reduction: int, ca_reduction: int, interactions: int):
        super().__init__()
        self.num_blocks = num_blocks
        self.fea_conv = conv_layer(in_nc, nf, 3)
        for i in range(1, num_blocks + 1):
            setattr(self, f"IDDB{i}", IDDB(nf, num_units, distill_rate, attention, reduction,
                                           ca_reduction, interactions))
        self.blf = BLF(nf, num_blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        f0 = self.fea_conv(x)
        h, blocks = f0, []
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f"IDDB{i}")(h)
            blocks.append(h)
        return self.blf(blocks) + f0


class MSPAN(_MSPANTrunk):
    """MSPAN for SR: trunk -> rec_conv (3x3) -> upsampler (3x3 to out*s^2 + PixelShuffle)."""

    def __init__(self, in_nc: int = 3, nf: int = 48, num_blocks: int = 6, out_nc: int = 3,
                 upscale: int = 4, num_units: int = 3, distill_rate: float = 0.5,
                 attention: str = "mspa", reduction: int = 4, ca_reduction: int = 16,
                 interactions: int = 2):
        super().__init__(in_nc, nf, num_blocks, num_units, distill_rate, attention, reduction,
                         ca_reduction, interactions)
        self.rec_conv = conv_layer(nf, nf, 3)
        self.upsampler = nn.Sequential(conv_layer(nf, out_nc * upscale**2, 3), nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampler(self.rec_conv(self.features(x)))


class IRStage(nn.Module):
    """One body stage of MSPAN-IR (figure (c)): `iddb`, then h + mlp_fc2(GELU(mlp_fc1(norm(h)))),
    `norm` a LayerNorm over each pixel's channels (eps 1e-5), the fcs 1x1 convs."""

    def __init__(self, channels: int, hidden: int, **iddb_kwargs: Any):
        super().__init__()
        self.iddb = IDDB(channels, **iddb_kwargs)
        self.norm = nn.LayerNorm(channels, eps=1e-5)
        self.mlp_fc1 = conv_layer(channels, hidden, 1)
        self.mlp_fc2 = conv_layer(hidden, channels, 1)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.iddb(x)
        y = self.norm(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return h + self.mlp_fc2(self.gelu(self.mlp_fc1(y)))


class MSPANIR(nn.Module):
    """MSPAN for other image restoration (networks.png (c)): head_conv1, ReLU, head_conv2;
    stage1..n; tail_conv1, ReLU, tail_conv2, Tanh; + the input (global skip)."""

    def __init__(self, in_nc: int = 3, nf: int = 54, num_blocks: int = 6, out_nc: int = 3,
                 mlp_ratio: float = 2.0, num_units: int = 3, distill_rate: float = 0.5,
                 attention: str = "mspa", reduction: int = 4, ca_reduction: int = 16,
                 interactions: int = 2):
        super().__init__()
        self.num_blocks = num_blocks
        self.head_conv1 = conv_layer(in_nc, nf, 3)
        self.head_conv2 = conv_layer(nf, nf, 3)
        for i in range(1, num_blocks + 1):
            setattr(self, f"stage{i}", IRStage(
                nf, max(1, round(nf * mlp_ratio)), num_units=num_units, distill_rate=distill_rate,
                attention=attention, reduction=reduction, ca_reduction=ca_reduction,
                interactions=interactions))
        self.tail_conv1 = conv_layer(nf, nf, 3)
        self.tail_conv2 = conv_layer(nf, out_nc, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head_conv2(torch.relu(self.head_conv1(x)))
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f"stage{i}")(h)
        return x + torch.tanh(self.tail_conv2(torch.relu(self.tail_conv1(h))))


def mspan_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The IDDB / attention keys of a `config.model` section, as these modules' arguments."""
    return dict(num_units=cfg["num_units"], distill_rate=cfg["distill_rate"],
                attention=cfg["attention"], reduction=cfg["attention_reduction"],
                ca_reduction=cfg["ca_reduction"], interactions=cfg["mspa_interactions"])
