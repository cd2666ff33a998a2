"""PyTorch reference models (NCHW, inputs in [0, 1]): the official IMDN here, MSPAN / MSPAN-IR in
`torch_mspan.py`, and the builder and parity check of all of them.

They exist to prove weight conversion: a state_dict from these modules (or from the official
IMDN code, whose names and math `IMDN` here reproduces) converts to Flax variables that give
the same outputs as the Flax models in `mspan_jax.models`.

PyTorch is an optional extra (`pip install -e .[torch]`); only this module and `torch_mspan.py`
import it at top level, and nothing else in the package imports them eagerly.
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


def build_torch_model(model_config: Mapping[str, Any]) -> nn.Module:
    """The reference module (eval mode, float32) for a `config.model` section."""
    from mspan_jax.convert.torch_mspan import MSPAN, MSPANIR, mspan_kwargs  # imports this module

    cfg = dict(model_config)
    name = cfg.get("name")
    if name == "imdn":
        model = IMDN(cfg["in_channels"], cfg["num_features"], cfg["num_modules"], cfg["out_channels"],
                     cfg["scale"], cfg["distill_rate"], cfg["cca_reduction"])
    elif name == "mspan":
        model = MSPAN(cfg["in_channels"], cfg["num_features"], cfg["num_blocks"], cfg["out_channels"],
                      cfg["scale"], **mspan_kwargs(cfg))
    elif name == "mspan_ir":
        if cfg.get("scale", 1) != 1:
            raise ValueError(f"config.model.scale={cfg['scale']}: MSPAN-IR needs scale 1")
        model = MSPANIR(cfg["in_channels"], cfg["num_features"], cfg["num_blocks"], cfg["out_channels"],
                        cfg["mlp_ratio"], **mspan_kwargs(cfg))
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
