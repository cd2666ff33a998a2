"""MSPAN: multi-semantic pixel attention network, reconstructed from the paper's text.

See docs/architecture.md for the diagram and every choice the paper leaves open.
Names follow the IMDN codebase (`fea_conv`, `IDDB1`.., `c`, `LR_conv`, `upsampler`)
so that PyTorch weights convert by a declarative rename.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mspan_jax.models.layers import (
    Dtype,
    TorchConvWeights,
    apply_mask,
    lrelu,
    masked_conv,
    matmul_1x1,
    pixel_shuffle,
    torch_conv,
)

Array = jax.Array


class MSPA(nn.Module):
    """Multi-semantic pixel attention: a 1x1 branch and depthwise dilated 3x3 branches,
    fused sequentially from the widest context down, give a sigmoid 3-D attention map."""

    features: int = 48
    dilations: Sequence[int] = (1, 2)
    dtype: Dtype = jnp.float32
    fusion: str = "sequential"  # ablation: "parallel" = one 1x1 over all branches (`fuse`)

    @nn.compact
    def attention(self, x: Array, mask: Array | None = None) -> Array:
        """The attention matrix in (0, 1), shape of x."""
        c, dt = self.features, self.dtype
        if self.fusion not in ("sequential", "parallel"):
            raise ValueError(f"mspa_fusion={self.fusion!r}; choose 'sequential' or 'parallel'")
        if not self.dilations:  # the 1x1 branch alone: PAN's pixel attention
            return nn.sigmoid(masked_conv(x, mask, c, 1, dtype=dt, name="pixel"))
        contexts = [masked_conv(x, mask, c, 3, dilation=d, groups=c, dtype=dt, name=f"context{k}")
                    for k, d in enumerate(self.dilations, start=1)]
        if self.fusion == "parallel":
            return nn.sigmoid(self._fuse_with_pixel(x, contexts, mask, "fuse"))
        m = contexts[-1]
        for k in range(len(contexts) - 1, 0, -1):
            m = masked_conv(jnp.concatenate([contexts[k - 1], lrelu(m)], -1), mask, c, 1, dtype=dt,
                            name=f"fuse{k}")
        return nn.sigmoid(self._fuse_with_pixel(x, [lrelu(m)], mask, "fuse0"))

    def _fuse_with_pixel(self, x: Array, rest: list[Array], mask: Array | None, name: str) -> Array:
        """The 1x1 conv `name` over concat(pixel(x), *rest), with the 1x1 pixel branch folded in.

        Both are linear and 1x1, so concat(x @ Wp + bp, r) @ Wf + bf equals concat(x, r) @ W + b with
        W = [Wp @ Wf_top; Wf_rest] and b = bp @ Wf_top + bf: one matmul of the same width instead of
        two, and the pixel branch is never written out (~2% of MSPAN's CPU train step). The params
        stay `pixel` and `name`, as before; gradients reach them through the fold. Pixels outside
        `mask` differ only before the output mask, which zeroes them.
        """
        c, dt, hi = self.features, self.dtype, lax.Precision.HIGHEST
        h = jnp.concatenate([x, *rest], -1)  # the shape of the fusion's input, concat(pixel(x), *rest)
        wp, bp = TorchConvWeights(c, name="pixel")(x)
        wf, bf = TorchConvWeights(c, name=name)(h)
        wp, wf = wp[0, 0], wf[0, 0]
        kernel = jnp.concatenate([jnp.dot(wp, wf[:c], precision=hi), wf[c:]], 0)
        bias = jnp.dot(bp, wf[:c], precision=hi) + bf
        h = h.astype(dt)
        return apply_mask(matmul_1x1(h, kernel.astype(dt)) + bias.astype(dt), mask)

    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        attention = self.attention(x, mask)
        out = x * attention
        # For scripts/visualize_mspa.py: kept only when apply(..., mutable=["intermediates"]).
        for key, value in (("input", x), ("attention", attention), ("output", out)):
            self.sow("intermediates", key, value)
        return out


class IDDB(nn.Module):
    """Information distillation dense block: alternating adjustment units (AU, 1x1 fusing the
    current features with every earlier distilled part) and correction units (CU, 3x3 refining
    the remaining part), a 1x1 fusion of all distilled parts and the last CU, then MSPA and a
    residual."""

    features: int = 48
    num_units: int = 3
    distill_rate: float = 0.25
    mspa_dilations: Sequence[int] = (1, 2)
    dtype: Dtype = jnp.float32
    use_mspa: bool = True  # ablation: False = the fused features go straight to the residual
    mspa_fusion: str = "sequential"

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        c, dt = self.features, self.dtype
        distilled = round(c * self.distill_rate)
        h, passed = x, []
        for i in range(1, self.num_units + 1):
            a = lrelu(masked_conv(jnp.concatenate([h, *passed], -1), mask, c, 1, dtype=dt,
                                  name=f"AU{i}"))
            passed.append(a[..., :distilled])
            h = lrelu(masked_conv(a[..., distilled:], mask, c, 3, dtype=dt, name=f"CU{i}"))
        out = masked_conv(jnp.concatenate([*passed, h], -1), mask, c, 1, dtype=dt, name="fuse")
        if not self.use_mspa:
            return out + x
        return MSPA(c, tuple(self.mspa_dilations), dt, self.mspa_fusion, name="mspa")(out, mask) + x


class MSPANBody(nn.Module):
    """Shallow conv, IDDB chain, 1x1 fusion of all block outputs, LR_conv and the long skip."""

    num_features: int = 48
    num_blocks: int = 6
    num_units: int = 3
    distill_rate: float = 0.25
    mspa_dilations: Sequence[int] = (1, 2)
    dtype: Dtype = jnp.float32
    use_mspa: bool = True
    mspa_fusion: str = "sequential"

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        c, dt = self.num_features, self.dtype
        fea = masked_conv(x, mask, c, 3, dtype=dt, name="fea_conv")
        h, outs = fea, []
        for i in range(1, self.num_blocks + 1):
            h = IDDB(c, self.num_units, self.distill_rate, tuple(self.mspa_dilations), dt,
                     self.use_mspa, self.mspa_fusion, name=f"IDDB{i}")(h, mask)
            outs.append(h)
        h = lrelu(masked_conv(jnp.concatenate(outs, -1), mask, c, 1, dtype=dt, name="c"))
        return masked_conv(h, mask, c, 3, dtype=dt, name="LR_conv") + fea


class _MSPANTrunk(nn.Module):
    """The hyperparameters that MSPAN and MSPAN-IR share, and their common body."""

    num_features: int = 48
    num_blocks: int = 6
    num_units: int = 3
    distill_rate: float = 0.25
    mspa_dilations: Sequence[int] = (1, 2)
    in_channels: int = 3
    out_channels: int = 3
    dtype: Dtype = jnp.float32
    use_mspa: bool = True  # ablations of docs/architecture.md; absent from configs = the defaults
    mspa_fusion: str = "sequential"

    def body(self) -> MSPANBody:
        """The shared body, named `body`; call inside the subclass's compact method."""
        return MSPANBody(self.num_features, self.num_blocks, self.num_units, self.distill_rate,
                         tuple(self.mspa_dilations), self.dtype, self.use_mspa, self.mspa_fusion,
                         name="body")


class MSPAN(_MSPANTrunk):
    """MSPAN for super-resolution: body -> 3x3 conv to out*s^2 -> pixel shuffle. x in [0, 1]."""

    scale: int = 4

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        h = self.body()(x, mask)
        y = torch_conv(self.out_channels * self.scale**2, 3, dtype=self.dtype, name="upsampler")(h)
        return pixel_shuffle(y, self.scale).astype(jnp.float32)


class MSPANIR(_MSPANTrunk):
    """MSPAN for other restoration tasks (denoising, deraining): same body, a 3x3 output conv,
    and a global residual, so the output is input + predicted correction."""

    scale: int = 1  # restoration keeps the size; present so every model answers `.scale`

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        if self.scale != 1 or self.in_channels != self.out_channels:
            raise ValueError("MSPAN-IR needs scale 1 and in_channels == out_channels "
                             f"(got scale={self.scale}, {self.in_channels}->{self.out_channels})")
        h = self.body()(x, mask)
        residual = torch_conv(self.out_channels, 3, dtype=self.dtype, name="out_conv")(h)
        return (x + residual).astype(jnp.float32)
