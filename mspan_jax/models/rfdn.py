"""RFDN (Liu et al., "Residual Feature Distillation Network for Lightweight Image Super-Resolution",
AIM 2020 efficient SR challenge winner), as the authors' released x4 model, and its spec.

IMDN's frame (`imdn.distillation_frame`): fea_conv (3x3) -> `num_modules` RFDBs (B1..) -> `c` (1x1
over the concatenated block outputs, LReLU 0.05) -> LR_conv (3x3) + the shallow features ->
upsampler (3x3 to out*s^2, pixel shuffle), around RFDN's own block. An RFDB (residual feature
distillation block) alternates a distilling 1x1 (`c{k}_d`, LReLU, C/2 channels) with a 3x3 residual
unit (`c{k}_r`, LReLU(conv(h) + h)) three times, ends with a 3x3 to C/2 (`c4`), fuses the four
distilled parts with a 1x1 (`c5`) and reweights them by the enhanced spatial attention (`esa`, the
ESA of `attention.py`, inner width C/4). Names are the authors' state_dict's.

The released weights were trained on pixel values in 0..255: the module scales its [0, 1] input up
and its output back, so it takes and returns [0, 1] like every model here; its PyTorch reference
(`mspan_jax/convert/torch_rfdn.py`) is the authors' network, on 0..255.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mspan_jax.models.attention import ESA
from mspan_jax.models.imdn import distillation_frame
from mspan_jax.models.layers import Dtype, lrelu, masked_conv
from mspan_jax.models.spec import ModelSpec, describe_sr_weights

Array = jax.Array

PIXEL_RANGE = 255.0  # the value of white the released weights were trained on


class RFDB(nn.Module):
    """Residual feature distillation block: 3 x [c{k}_d distil, c{k}_r residual], c4, c5, esa."""

    features: int = 50
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        c, dt = self.features, self.dtype
        distilled, h = [], x
        for k in (1, 2, 3):
            distilled.append(lrelu(masked_conv(h, mask, c // 2, 1, dtype=dt, name=f"c{k}_d")))
            h = lrelu(masked_conv(h, mask, c, 3, dtype=dt, name=f"c{k}_r") + h)
        distilled.append(lrelu(masked_conv(h, mask, c // 2, 3, dtype=dt, name="c4")))
        out = masked_conv(jnp.concatenate(distilled, -1), mask, c, 1, dtype=dt, name="c5")
        return ESA(c, 4, dt, name="esa")(out, mask)


class RFDN(nn.Module):
    """RFDN: fea_conv -> RFDB x M -> concat -> 1x1 + LReLU -> LR_conv + skip -> upsampler.
    x in [0, 1], NHWC (scaled to the weights' 0..255 inside)."""

    scale: int = 4
    num_features: int = 50
    num_modules: int = 4
    in_channels: int = 3
    out_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        nf, dt = self.num_features, self.dtype
        blocks = [RFDB(nf, dt, name=f"B{i}") for i in range(1, self.num_modules + 1)]
        y = distillation_frame(x * PIXEL_RANGE, mask, blocks, nf, self.out_channels, self.scale, dt)
        return y / PIXEL_RANGE


def _pads_exactly(model: nn.Module) -> bool:
    """No: every block's ESA (strided conv, max pooling, resize) sees the padding."""
    del model
    return False


def _min_input_size(model: nn.Module) -> int:
    """ESA's: its strided conv's map must hold one 7x7 pooling window."""
    del model
    return ESA.min_size


def _describe_weights(state_dict: Mapping[str, Any]) -> str | None:
    if "B1.c1_d.weight" not in state_dict:
        return None
    return describe_sr_weights("rfdn", state_dict, "fea_conv.weight")


SPECS = (
    ModelSpec(
        name="rfdn",
        module=RFDN,
        summary="RFDN (Liu et al. 2020), the authors' AIM 2020 model",
        # The released RFDN_AIM.pth: nf=50, four RFDBs.
        defaults=dict(num_features=50, num_modules=4, in_channels=3, out_channels=3, init="torch"),
        pads_exactly=_pads_exactly,
        min_input_size=_min_input_size,
        torch_reference="mspan_jax.convert.torch_rfdn:build",
        torch_names=((r"c", "c.0"), (r"upsampler", "upsampler.0")),
        torch_pixel_range=PIXEL_RANGE,
        describe_weights=_describe_weights,
    ),
)
