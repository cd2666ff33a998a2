"""PyTorch reference of the paper's MSPAN family (NCHW, inputs in [0, 1]): IDDB, BLF, MSPAN and
MSPAN-IR (figure (c)), with the Flax modules' parameter names, so converted weights give the same
outputs (PyTorch is the optional [torch] extra)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mspan_jax.convert.torch_attention import block_attention
from mspan_jax.convert.torch_layers import conv_layer, lrelu


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
    """Backward fusion: T_n = F_n, T_i = cat(act(proj_f{i}(F_i)), act(proj_t{i}(T_{i+1}))), `act`
    the identity ("none", linear projections) or ReLU ("relu")."""

    def __init__(self, channels: int, num_blocks: int, activation: str = "none"):
        super().__init__()
        if activation not in ("none", "relu"):
            raise ValueError(f"BLF activation {activation!r}; choose 'none' or 'relu'")
        self.act = torch.relu if activation == "relu" else (lambda x: x)
        half = channels // 2
        for i in range(1, num_blocks):
            setattr(self, f"proj_f{i}", conv_layer(channels, half, 1))
            setattr(self, f"proj_t{i}", conv_layer(channels, channels - half, 1))

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        t = blocks[-1]
        for i in range(len(blocks) - 1, 0, -1):
            t = torch.cat([self.act(getattr(self, f"proj_f{i}")(blocks[i - 1])),
                           self.act(getattr(self, f"proj_t{i}")(t))], dim=1)
        return t


class _MSPANTrunk(nn.Module):
    """fea_conv (F_0), IDDB1..n (F_1..F_n), blf (T_1); features() = T_1 + F_0."""

    def __init__(self, in_nc: int, nf: int, num_blocks: int, num_units: int, distill_rate: float,
                 attention: str, reduction: int, ca_reduction: int, interactions: int,
                 blf_activation: str = "none"):
        super().__init__()
        self.num_blocks = num_blocks
        self.fea_conv = conv_layer(in_nc, nf, 3)
        for i in range(1, num_blocks + 1):
            setattr(self, f"IDDB{i}", IDDB(nf, num_units, distill_rate, attention, reduction,
                                           ca_reduction, interactions))
        self.blf = BLF(nf, num_blocks, blf_activation)

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
                 interactions: int = 2, blf_activation: str = "none"):
        super().__init__(in_nc, nf, num_blocks, num_units, distill_rate, attention, reduction,
                         ca_reduction, interactions, blf_activation)
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


def build_mspan(model_config: Mapping[str, Any]) -> MSPAN:
    """The reference of a `config.model` section of MSPAN."""
    cfg = model_config
    return MSPAN(cfg["in_channels"], cfg["num_features"], cfg["num_blocks"], cfg["out_channels"],
                 cfg["scale"], **mspan_kwargs(cfg), blf_activation=cfg.get("blf_activation", "none"))


def build_mspan_ir(model_config: Mapping[str, Any]) -> MSPANIR:
    """The reference of a `config.model` section of MSPAN-IR (scale 1)."""
    cfg = model_config
    if cfg.get("scale", 1) != 1:
        raise ValueError(f"config.model.scale={cfg['scale']}: MSPAN-IR needs scale 1")
    return MSPANIR(cfg["in_channels"], cfg["num_features"], cfg["num_blocks"], cfg["out_channels"],
                   cfg["mlp_ratio"], **mspan_kwargs(cfg))
