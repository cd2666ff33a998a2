"""PyTorch reference models (NCHW, inputs in [0, 1]): the official IMDN and MSPAN / MSPAN-IR.

They exist to prove weight conversion: a state_dict from these modules (or from the official
IMDN code, whose names and math `IMDN` here reproduces) converts to Flax variables that give
the same outputs as the Flax models in `mspan_jax.models`.

PyTorch is an optional extra (`pip install -e .[torch]`); only this module imports it at top
level, and nothing else in the package imports this module eagerly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import torch
from torch import nn

from mspan_jax.models.registry import get_model

LRELU_SLOPE = 0.05  # IMDN's activation('lrelu', neg_slope=0.05)


def conv_layer(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
               groups: int = 1) -> nn.Conv2d:
    """IMDN's `conv_layer`: stride 1, 'same' zero padding, bias."""
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Conv2d(in_channels, out_channels, kernel_size, 1, padding=padding, bias=True,
                     dilation=dilation, groups=groups)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.leaky_relu(x, LRELU_SLOPE)


# ---------------------------------------------------------------------------------------------
# IMDN, as Zheng222/IMDN model/block.py + model/architecture.py.
# ---------------------------------------------------------------------------------------------


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


class IMDN(nn.Module):
    """fea_conv -> IMDB1..M -> c (1x1 + LReLU) -> LR_conv + skip -> upsampler (conv + shuffle)."""

    def __init__(self, in_nc: int = 3, nf: int = 64, num_modules: int = 6, out_nc: int = 3,
                 upscale: int = 4, distill_rate: float = 0.25, cca_reduction: int = 16):
        super().__init__()
        self.num_modules = num_modules
        self.fea_conv = conv_layer(in_nc, nf, 3)
        for i in range(1, num_modules + 1):
            setattr(self, f"IMDB{i}", IMDModule(nf, distill_rate, cca_reduction))
        self.c = nn.Sequential(conv_layer(nf * num_modules, nf, 1),
                               nn.LeakyReLU(LRELU_SLOPE, inplace=True))
        self.LR_conv = conv_layer(nf, nf, 3)
        self.upsampler = nn.Sequential(conv_layer(nf, out_nc * upscale**2, 3), nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        h, outs = fea, []
        for i in range(1, self.num_modules + 1):
            h = getattr(self, f"IMDB{i}")(h)
            outs.append(h)
        out_lr = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(out_lr)


# ---------------------------------------------------------------------------------------------
# MSPAN and MSPAN-IR as the paper's figures draw them: the math of mspan_jax/models/mspan.py and
# attention.py, written as the authors' PyTorch code would be.
# ---------------------------------------------------------------------------------------------


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


def _mspan_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return dict(num_units=cfg["num_units"], distill_rate=cfg["distill_rate"],
                attention=cfg["attention"], reduction=cfg["attention_reduction"],
                ca_reduction=cfg["ca_reduction"], interactions=cfg["mspa_interactions"])


def build_torch_model(model_config: Mapping[str, Any]) -> nn.Module:
    """The reference module (eval mode, float32) for a `config.model` section."""
    cfg = dict(model_config)
    name = cfg.get("name")
    if name == "imdn":
        model = IMDN(cfg["in_channels"], cfg["num_features"], cfg["num_modules"], cfg["out_channels"],
                     cfg["scale"], cfg["distill_rate"], cfg["cca_reduction"])
    elif name == "mspan":
        model = MSPAN(cfg["in_channels"], cfg["num_features"], cfg["num_blocks"], cfg["out_channels"],
                      cfg["scale"], **_mspan_kwargs(cfg))
    elif name == "mspan_ir":
        if cfg.get("scale", 1) != 1:
            raise ValueError(f"config.model.scale={cfg['scale']}: MSPAN-IR needs scale 1")
        model = MSPANIR(cfg["in_channels"], cfg["num_features"], cfg["num_blocks"], cfg["out_channels"],
                        cfg["mlp_ratio"], **_mspan_kwargs(cfg))
    else:
        raise ValueError(f"config.model.name={name!r} has no PyTorch reference; choose imdn, mspan or "
                         "mspan_ir")
    return model.float().eval()


def max_abs_difference(model_config: Mapping[str, Any], state_dict: Mapping[str, np.ndarray],
                       variables: Mapping[str, Any], input_hw: tuple[int, int] = (32, 40),
                       seed: int = 0) -> float:
    """Max |Flax - PyTorch| of the output on one random [0, 1] input of size `input_hw`: the reference
    model loads `state_dict` (strictly), the Flax model uses the converted `variables`."""
    reference = build_torch_model(model_config)
    tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state_dict.items()}
    reference.load_state_dict(tensors, strict=True)
    x = np.random.default_rng(seed).random((1, model_config["in_channels"], *input_hw), dtype=np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(jax.jit(get_model(model_config).apply)(variables, x.transpose(0, 2, 3, 1)))
    if got.shape != expected.shape:
        raise ValueError(f"output shapes differ: Flax {got.shape}, PyTorch {expected.shape}")
    return float(np.max(np.abs(got - expected)))
