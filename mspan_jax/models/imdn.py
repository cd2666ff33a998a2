"""IMDN (Hui et al., ACM MM 2019), exactly as the official PyTorch architecture.

Submodule names follow the official state_dict (`fea_conv`, `IMDB1`.., `c`, `LR_conv`,
`upsampler`) so that weight conversion is a declarative rename.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mspan_jax.models.layers import Dtype, lrelu, masked_conv, pixel_shuffle, torch_conv

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
        fea = masked_conv(x, mask, nf, 3, dtype=dt, name="fea_conv")
        h, outs = fea, []
        for i in range(1, self.num_modules + 1):
            h = IMDB(
                nf, self.distill_rate, self.cca_reduction, dt, name=f"IMDB{i}"
            )(h, mask)
            outs.append(h)
        h = lrelu(masked_conv(jnp.concatenate(outs, -1), mask, nf, 1, dtype=dt, name="c"))
        h = masked_conv(h, mask, nf, 3, dtype=dt, name="LR_conv") + fea
        y = torch_conv(self.out_channels * self.scale**2, 3, dtype=dt, name="upsampler")(h)
        return pixel_shuffle(y, self.scale).astype(jnp.float32)
