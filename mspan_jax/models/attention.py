"""The block attentions of MSPAN's IDDB and of the paper's attention ablation: MSPA, CA and ESA.

All take the fused block features (N, H, W, C) and return them reweighted, same shape. MSPA and
ESA work partly at reduced resolution, so unlike the convolutions they do not ignore zero padding:
a padded input is not the unpadded one. Each module's `pads_exactly` says so, and
`registry.pads_exactly` turns it into the model's answer, by which `inference.Predictor` runs
such models unpadded, one program per input size (docs/evaluation.md).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mspan_jax.models.layers import (
    Dtype,
    GlobalAvgPool,
    Pool,
    apply_mask,
    lrelu,
    masked_conv,
    resize_bilinear,
    torch_conv,
)

Array = jax.Array

ATTENTIONS = ("none", "ca", "esa", "mspa")


class MSPA(nn.Module):
    """Multi-semantic pixel attention (`MSPA.png`).

    Channel D (`channel_down`, 1x1 to C / reduction) gives the reduced full-resolution map; Spatial D
    (`spatial_down`, 3x3, then 2x2 and 4x4 average pooling) gives the two coarser maps. Each of the
    `interactions` multi-semantic interactions extracts context at both coarse scales
    (`context{k}_quarter`, `context{k}_half`: 3x3, LReLU) and fuses them from the coarsest up, each
    coarse map aligned (bilinear) to the next finer one and joined by a 1x1 + LReLU (`fuse{k}_half`,
    then `fuse{k}_full` with the full-resolution map). Channel U (`channel_up`, 1x1 back to C) and a
    sigmoid give the attention matrix, multiplied into the input.
    """

    # Spatial D's pooled maps and their bilinear resize see the zero padding and the padded size.
    pads_exactly: ClassVar[bool] = False
    min_size: ClassVar[int] = 4  # Spatial D's 4x4 pooling needs one window

    features: int = 48
    reduction: int = 4
    interactions: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def attention(self, x: Array, mask: Array | None = None) -> Array:
        """The attention matrix in (0, 1), shape of x."""
        f, dt = max(1, self.features // self.reduction), self.dtype
        _, h, w, _ = x.shape
        full = masked_conv(x, mask, f, 1, dtype=dt, name="channel_down")
        down = torch_conv(f, 3, dtype=dt, name="spatial_down")(full)
        half = Pool("avg", 2, name="pool_half")(down)
        quarter = Pool("avg", 4, name="pool_quarter")(down)
        for k in range(1, self.interactions + 1):
            quarter = lrelu(torch_conv(f, 3, dtype=dt, name=f"context{k}_quarter")(quarter))
            half = lrelu(torch_conv(f, 3, dtype=dt, name=f"context{k}_half")(half))
            joined = jnp.concatenate([half, resize_bilinear(quarter, half.shape[1:3])], -1)
            half = lrelu(torch_conv(f, 1, dtype=dt, name=f"fuse{k}_half")(joined))
            joined = jnp.concatenate([full, resize_bilinear(half, (h, w))], -1)
            full = lrelu(masked_conv(joined, mask, f, 1, dtype=dt, name=f"fuse{k}_full"))
        return nn.sigmoid(masked_conv(full, mask, self.features, 1, dtype=dt, name="channel_up"))

    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        attention = self.attention(x, mask)
        out = x * attention
        # For scripts/visualize_mspa.py: kept only when apply(..., mutable=["intermediates"]).
        for key, value in (("input", x), ("attention", attention), ("output", out)):
            self.sow("intermediates", key, value)
        return out


class CA(nn.Module):
    """Channel attention (RCAN's): global average pool, 1x1 to C / reduction, ReLU, 1x1, sigmoid."""

    pads_exactly: ClassVar[bool] = True  # the pool averages over the mask only
    min_size: ClassVar[int] = 1

    features: int = 48
    reduction: int = 16
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        y = GlobalAvgPool(name="pool")(x, mask)
        y = nn.relu(torch_conv(max(1, self.features // self.reduction), 1, dtype=self.dtype,
                               name="squeeze")(y))
        return x * nn.sigmoid(torch_conv(self.features, 1, dtype=self.dtype, name="excite")(y))


class ESA(nn.Module):
    """Enhanced spatial attention, as RFDN's `ESA` (its layer names): 1x1 to C / reduction, a 3x3
    stride-2 conv, 7x7 stride-3 max pooling, three 3x3 convs, bilinear back to full size, plus a
    1x1 of the reduced full-resolution map, 1x1 back to C, sigmoid. Needs H, W >= 15."""

    # The strided conv, max pooling and bilinear resize see the zero padding and the padded size.
    pads_exactly: ClassVar[bool] = False
    min_size: ClassVar[int] = 15  # the stride-2 conv's map must hold one 7x7 pooling window

    features: int = 48
    reduction: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        f, dt = max(1, self.features // self.reduction), self.dtype
        _, h, w, _ = x.shape
        c1_ = masked_conv(x, mask, f, 1, dtype=dt, name="conv1")
        c1 = torch_conv(f, 3, stride=2, padding=0, dtype=dt, name="conv2")(c1_)
        v_max = Pool("max", 7, 3, name="max_pool")(c1)
        v_range = nn.relu(torch_conv(f, 3, dtype=dt, name="conv_max")(v_max))
        c3 = nn.relu(torch_conv(f, 3, dtype=dt, name="conv3")(v_range))
        c3 = resize_bilinear(torch_conv(f, 3, dtype=dt, name="conv3_")(c3), (h, w))
        cf = torch_conv(f, 1, dtype=dt, name="conv_f")(c1_)
        m = nn.sigmoid(torch_conv(self.features, 1, dtype=dt, name="conv4")(c3 + cf))
        return apply_mask(x * m, mask)


ATTENTION_MODULES: dict[str, type[nn.Module]] = {"mspa": MSPA, "ca": CA, "esa": ESA}


def attention_class(kind: str) -> type[nn.Module] | None:
    """The module class of block attention `kind` (one of ATTENTIONS; "none": None); the one
    check of the `config.model.attention` key."""
    if kind not in ATTENTIONS:
        raise ValueError(f"config.model.attention={kind!r}; choose one of {ATTENTIONS}")
    return ATTENTION_MODULES.get(kind)


def attention_pads_exactly(kind: str) -> bool:
    """Whether block attention `kind` (one of ATTENTIONS) on a zero-padded input with its validity
    mask gives the unpadded result; "none" (no attention) does."""
    cls = attention_class(kind)
    return cls is None or cls.pads_exactly


def attention_min_size(kind: str) -> int:
    """The smallest input height and width that block attention `kind` runs on."""
    cls = attention_class(kind)
    return 1 if cls is None else cls.min_size


def block_attention(kind: str, features: int, reduction: int, ca_reduction: int,
                    interactions: int, dtype: Dtype) -> nn.Module | None:
    """The IDDB's attention module of `kind` (one of ATTENTIONS; "none": None), named by its kind;
    call inside a compact method."""
    cls = attention_class(kind)
    if cls is MSPA:
        return MSPA(features, reduction, interactions, dtype, name=kind)
    if cls is CA:
        return CA(features, ca_reduction, dtype, name=kind)
    if cls is ESA:
        return ESA(features, reduction, dtype, name=kind)
    return None
