"""IMDN (Hui et al., ACM MM 2019), exactly as the official PyTorch architecture, and its spec.

Submodule names follow the official state_dict (`fea_conv`, `IMDB1`.., `c`, `LR_conv`,
`upsampler`) so that weight conversion is a declarative rename (`SPECS` below); the PyTorch
reference is `mspan_jax/convert/torch_imdn.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mspan_jax.models.layers import Dtype, lrelu, masked_conv, pixel_shuffle, torch_conv
from mspan_jax.models.spec import ModelSpec, PaperRow, describe_sr_weights

Array = jax.Array


def masked_mean_std(x: Array, mask: Array | None) -> tuple[Array, Array]:
    """Per-channel spatial mean and (population) std over the valid region, shape N,1,1,C."""
    if mask is None:
        mean = jnp.mean(x, axis=(1, 2), keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    else:
        m = mask.astype(x.dtype)
        count = jnp.sum(m, axis=(1, 2), keepdims=True)
        mean = jnp.sum(x * m, axis=(1, 2), keepdims=True) / count
        var = jnp.sum(jnp.square(x - mean) * m, axis=(1, 2), keepdims=True) / count
    return mean, jnp.sqrt(var)


class CCALayer(nn.Module):
    """Contrast-aware channel attention: (std + mean) -> 1x1 -> ReLU -> 1x1 -> sigmoid."""

    channels: int
    reduction: int = 16
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        mean, std = masked_mean_std(x, mask)
        y = std + mean
        y = nn.relu(torch_conv(self.channels // self.reduction, 1, dtype=self.dtype, name="du1")(y))
        y = nn.sigmoid(torch_conv(self.channels, 1, dtype=self.dtype, name="du2")(y))
        return x * y


class IMDB(nn.Module):
    """Information multi-distillation block (the official `IMDModule`)."""

    features: int = 64
    distill_rate: float = 0.25
    cca_reduction: int = 16
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        distilled = int(self.features * self.distill_rate)
        parts, h = [], x
        for name in ("c1", "c2", "c3"):
            h = lrelu(masked_conv(h, mask, self.features, 3, dtype=self.dtype, name=name))
            parts.append(h[..., :distilled])
            h = h[..., distilled:]
        parts.append(masked_conv(h, mask, distilled, 3, dtype=self.dtype, name="c4"))
        out = jnp.concatenate(parts, axis=-1)
        out = CCALayer(distilled * 4, self.cca_reduction, dtype=self.dtype, name="cca")(out, mask)
        return masked_conv(out, mask, self.features, 1, dtype=self.dtype, name="c5") + x


def distillation_frame(x: Array, mask: Array | None, blocks: Sequence[nn.Module], features: int,
                       out_channels: int, scale: int, dtype: Dtype) -> Array:
    """IMDN's frame around its blocks, which RFDN keeps: `fea_conv` (3x3), the blocks in a chain,
    `c` (1x1 + LReLU over every block's output), `LR_conv` (3x3) + the shallow features, and
    `upsampler` (3x3 to out_channels * scale^2, pixel shuffle); call inside a compact method."""
    fea = masked_conv(x, mask, features, 3, dtype=dtype, name="fea_conv")
    h, outs = fea, []
    for block in blocks:
        h = block(h, mask)
        outs.append(h)
    h = lrelu(masked_conv(jnp.concatenate(outs, -1), mask, features, 1, dtype=dtype, name="c"))
    h = masked_conv(h, mask, features, 3, dtype=dtype, name="LR_conv") + fea
    y = torch_conv(out_channels * scale**2, 3, dtype=dtype, name="upsampler")(h)
    return pixel_shuffle(y, scale).astype(jnp.float32)


class IMDN(nn.Module):
    """IMDN: fea_conv -> IMDB x M -> concat -> 1x1 + LReLU -> LR_conv + skip -> upsampler."""

    scale: int = 4
    num_features: int = 64
    num_modules: int = 6
    distill_rate: float = 0.25
    cca_reduction: int = 16
    in_channels: int = 3
    out_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        nf, dt = self.num_features, self.dtype
        blocks = [IMDB(nf, self.distill_rate, self.cca_reduction, dt, name=f"IMDB{i}")
                  for i in range(1, self.num_modules + 1)]
        return distillation_frame(x, mask, blocks, nf, self.out_channels, self.scale, dt)


def _describe_weights(state_dict: Mapping[str, Any]) -> str | None:
    if "IMDB1.c1.weight" not in state_dict:
        return None
    return describe_sr_weights("imdn", state_dict, "fea_conv.weight")


_MAIN = "main table"  # the MSPAN paper's: the IMDN paper's pure multiply-adds (`macs`)
SPECS = (
    ModelSpec(
        name="imdn",
        module=IMDN,
        summary="IMDN (Hui et al. 2019), the official architecture",
        # The official IMDN: nf=64, 6 IMDBs, distillation 0.25, CCA reduction 16.
        defaults=dict(num_features=64, num_modules=6, distill_rate=0.25, cca_reduction=16,
                      in_channels=3, out_channels=3, init="torch"),
        # pads_exactly (the default): every conv output that feeds a conv is masked, and CCA's
        # mean and std are over the mask.
        torch_reference="mspan_jax.convert.torch_imdn:build",
        torch_names=(
            (r"(IMDB\d+)/cca/du1", r"\1.cca.conv_du.0"),
            (r"(IMDB\d+)/cca/du2", r"\1.cca.conv_du.2"),
            (r"c", "c.0"),
            (r"upsampler", "upsampler.0"),
        ),
        describe_weights=_describe_weights,
        paper_rows=(
            PaperRow("imdn", 2, None, 694, 158.8, "macs", _MAIN),
            PaperRow("imdn", 3, None, 703, 71.5, "macs", _MAIN),
            PaperRow("imdn", 4, None, 715, 40.9, "macs", _MAIN),
        ),
    ),
)
