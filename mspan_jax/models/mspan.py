"""MSPAN: multi-semantic pixel attention network, as the authors' figures draw it.

`networks.png` (a) and (b) and `MSPA.png` of the paper; docs/architecture.md maps every element of
the figures to the module here, and gives the open choices that the paper's parameter and
mult-add counts settle. Names are the PyTorch reference's (`mspan_jax/convert/torch_mspan.py`),
so weights convert by a declarative rename.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mspan_jax.models.attention import attention_class, block_attention
from mspan_jax.models.layers import (
    Dtype,
    apply_mask,
    lrelu,
    masked_conv,
    pixel_shuffle,
    torch_conv,
)

Array = jax.Array


class IDDB(nn.Module):
    """Information distillation dense block (`networks.png` (b)).

    `num_units` adjustment units (AU{j}: 1x1 over [the last CU's output, every earlier distilled
    part], LReLU) alternate with correction units (CU{j}: 3x3 on the AU's remaining `features`
    channels, LReLU). Each AU's first `distilled` output channels go to every later AU and to
    `fuse` (1x1 over [all distilled parts, the last CU]); then the block attention and the
    residual add of the block's input.
    """

    features: int = 48
    num_units: int = 3
    distill_rate: float = 0.5
    attention: str = "mspa"
    attention_reduction: int = 4
    ca_reduction: int = 16
    mspa_interactions: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        c, dt = self.features, self.dtype
        distilled = round(c * self.distill_rate)
        h, passed = x, []
        for j in range(1, self.num_units + 1):
            a = lrelu(masked_conv(jnp.concatenate([h, *passed], -1), mask, c + distilled, 1, dtype=dt,
                                  name=f"AU{j}"))
            passed.append(a[..., :distilled])
            h = lrelu(masked_conv(a[..., distilled:], mask, c, 3, dtype=dt, name=f"CU{j}"))
        out = masked_conv(jnp.concatenate([*passed, h], -1), mask, c, 1, dtype=dt, name="fuse")
        attend = block_attention(self.attention, c, self.attention_reduction, self.ca_reduction,
                                 self.mspa_interactions, dt)
        return (out if attend is None else attend(out, mask)) + x


class BLF(nn.Module):
    """Backward fusion of the block outputs (`networks.png` (a), LatticeNet's backward fusion):
    T_n = F_n; T_i = [ReLU(proj_f{i}(F_i)), ReLU(proj_t{i}(T_{i+1}))], each a 1x1 linear
    projection to half the width; returns T_1."""

    features: int = 48
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, blocks: list[Array], mask: Array | None = None) -> Array:
        half, dt = self.features // 2, self.dtype
        t = blocks[-1]
        for i in range(len(blocks) - 1, 0, -1):
            f_part = nn.relu(masked_conv(blocks[i - 1], mask, half, 1, dtype=dt, name=f"proj_f{i}"))
            t_part = nn.relu(masked_conv(t, mask, self.features - half, 1, dtype=dt, name=f"proj_t{i}"))
            t = jnp.concatenate([f_part, t_part], -1)
        return t


class MSPANTrunk(nn.Module):
    """Shallow mapping (`fea_conv`: F_0), the IDDB chain (F_1..F_n), BLF, and F_d = T_1 + F_0."""

    num_features: int = 48
    num_blocks: int = 6
    num_units: int = 3
    distill_rate: float = 0.5
    attention: str = "mspa"
    attention_reduction: int = 4
    ca_reduction: int = 16
    mspa_interactions: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        c, dt = self.num_features, self.dtype
        f0 = masked_conv(x, mask, c, 3, dtype=dt, name="fea_conv")
        h, blocks = f0, []
        for i in range(1, self.num_blocks + 1):
            h = IDDB(c, self.num_units, self.distill_rate, self.attention, self.attention_reduction,
                     self.ca_reduction, self.mspa_interactions, dt, name=f"IDDB{i}")(h, mask)
            blocks.append(h)
        return BLF(c, dt, name="blf")(blocks, mask) + f0


class _MSPANConfig(nn.Module):
    """The hyperparameters that MSPAN and MSPAN-IR share (`config.model` keys)."""

    num_features: int = 48
    num_blocks: int = 6
    num_units: int = 3
    distill_rate: float = 0.5  # distilled channels per AU = round(num_features * distill_rate)
    attention: str = "mspa"  # the block attention: one of ATTENTIONS ("none", "ca", "esa", "mspa")
    attention_reduction: int = 4  # MSPA's and ESA's inner width = num_features // this
    ca_reduction: int = 16  # CA's squeeze width = num_features // this
    mspa_interactions: int = 2  # "multi-semantic interaction x2"
    in_channels: int = 3
    out_channels: int = 3
    dtype: Dtype = jnp.float32

    def trunk(self) -> MSPANTrunk:
        """The shared trunk, named `body`; call inside the subclass's compact method."""
        attention_class(self.attention)  # fails in one line on an unknown kind, before any init
        return MSPANTrunk(self.num_features, self.num_blocks, self.num_units, self.distill_rate,
                          self.attention, self.attention_reduction, self.ca_reduction,
                          self.mspa_interactions, self.dtype, name="body")


class MSPAN(_MSPANConfig):
    """MSPAN for super-resolution: trunk -> reconstruction (`rec_conv` 3x3, `upsampler` 3x3 to
    out*s^2, pixel shuffle). x in [0, 1], NHWC."""

    scale: int = 4

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        h = masked_conv(self.trunk()(x, mask), mask, self.num_features, 3, dtype=self.dtype,
                        name="rec_conv")
        y = torch_conv(self.out_channels * self.scale**2, 3, dtype=self.dtype, name="upsampler")(h)
        return pixel_shuffle(y, self.scale).astype(jnp.float32)


class IRStage(nn.Module):
    """One stage of MSPAN-IR's body (`networks.png` (c), the grey box): an IDDB, then a Layer
    Norm and an MLP inside a residual, h + MLP(LN(h)).

    The LN normalizes each pixel's channels (PyTorch's LayerNorm(C) on channels-last, eps 1e-5,
    two-pass variance); the MLP is the transformer one, 1x1 conv C -> hidden, exact (erf) GELU,
    1x1 conv hidden -> C. All pointwise, so the stage output is masked again for padded batches.
    """

    features: int = 48
    mlp_hidden: int = 96
    num_units: int = 3
    distill_rate: float = 0.5
    attention: str = "mspa"
    attention_reduction: int = 4
    ca_reduction: int = 16
    mspa_interactions: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        c, dt = self.features, self.dtype
        h = IDDB(c, self.num_units, self.distill_rate, self.attention, self.attention_reduction,
                 self.ca_reduction, self.mspa_interactions, dt, name="iddb")(x, mask)
        y = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=dt, name="norm")(h)
        y = torch_conv(self.mlp_hidden, 1, dtype=dt, name="mlp_fc1")(y)
        y = nn.gelu(y, approximate=False)
        y = torch_conv(c, 1, dtype=dt, name="mlp_fc2")(y)
        return apply_mask(h + y, mask)


class MSPANIR(_MSPANConfig):
    """MSPAN for other image restoration (denoising, deraining), as `networks.png` (c) draws it.

    head: `head_conv1` 3x3, ReLU, `head_conv2` 3x3; body: `stage{i}` for i = 1..num_blocks, each an
    IDDB then h + MLP(LayerNorm(h)) (`IRStage`); tail: `tail_conv1` 3x3, ReLU, `tail_conv2` 3x3 to
    out_channels, Tanh; output = input + tail (the global skip). No BLF and no upsampler: the
    figure draws neither. x in [0, 1], NHWC; the Tanh bounds the correction to (-1, 1).
    The paper leaves the width C, n and the MLP's hidden width open; the defaults (C=54, n=6, hidden
    2C) give the restoration tables' 8.3 x 10^5 parameters for gray and colour images alike:
    825,481 (1 channel) and 827,427 (3 channels); the arithmetic is in docs/restoration.md.
    """

    num_features: int = 54
    num_blocks: int = 6
    mlp_ratio: float = 2.0  # the MLP's hidden width = round(num_features * mlp_ratio)
    scale: int = 1  # restoration keeps the size; present so every model answers `.scale`

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        if self.scale != 1 or self.in_channels != self.out_channels:
            raise ValueError("MSPAN-IR needs scale 1 and in_channels == out_channels "
                             f"(got scale={self.scale}, {self.in_channels}->{self.out_channels})")
        attention_class(self.attention)  # fails in one line on an unknown kind, before any init
        c, dt = self.num_features, self.dtype
        h = nn.relu(masked_conv(x, mask, c, 3, dtype=dt, name="head_conv1"))
        h = masked_conv(h, mask, c, 3, dtype=dt, name="head_conv2")
        for i in range(1, self.num_blocks + 1):
            h = IRStage(c, max(1, round(c * self.mlp_ratio)), self.num_units, self.distill_rate,
                        self.attention, self.attention_reduction, self.ca_reduction,
                        self.mspa_interactions, dt, name=f"stage{i}")(h, mask)
        h = nn.relu(masked_conv(h, mask, c, 3, dtype=dt, name="tail_conv1"))
        y = jnp.tanh(torch_conv(self.out_channels, 3, dtype=dt, name="tail_conv2")(h))
        return (x + y).astype(jnp.float32)
