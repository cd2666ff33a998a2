"""MSPAN: multi-semantic pixel attention network, as the authors' figures draw it.

`networks.png` (a) and (b) and `MSPA.png` of the paper; docs/architecture.md maps every element of
the figures to the module here, and gives the open choices that the paper's parameter and
mult-add counts settle. Names are the PyTorch reference's (`mspan_jax/convert/torch_mspan.py`),
so weights convert by a declarative rename. `SPECS` (the end of the file) registers MSPAN and
MSPAN-IR, with the paper's parameter and mult-add rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mspan_jax.models.attention import (
    ATTENTIONS,
    attention_class,
    attention_min_size,
    attention_pads_exactly,
    block_attention,
)
from mspan_jax.models.layers import (
    Dtype,
    apply_mask,
    lrelu,
    masked_conv,
    pixel_shuffle,
    torch_conv,
)
from mspan_jax.models.spec import ModelSpec, PaperRow, RestorationRow, describe_sr_weights

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
            a = lrelu(masked_conv([h, *passed], mask, c + distilled, 1, dtype=dt, name=f"AU{j}"))
            passed.append(a[..., :distilled])
            h = lrelu(masked_conv(a[..., distilled:], mask, c, 3, dtype=dt, name=f"CU{j}"))
        out = masked_conv([*passed, h], mask, c, 1, dtype=dt, name="fuse")
        attend = block_attention(self.attention, c, self.attention_reduction, self.ca_reduction,
                                 self.mspa_interactions, dt)
        return (out if attend is None else attend(out, mask)) + x


# What follows each BLF projection (`config.model.blf_activation`): the figure's legend calls them
# "Linear projection layer" ("none", the default); "relu" is LatticeNet's backward fusion, which the
# shipped weights were trained with.
BLF_ACTIVATIONS = {"none": lambda x: x, "relu": nn.relu}


class BLF(nn.Module):
    """Backward fusion of the block outputs (`networks.png` (a), LatticeNet's backward fusion):
    T_n = F_n; T_i = [act(proj_f{i}(F_i)), act(proj_t{i}(T_{i+1}))], each a 1x1 projection to half
    the width, `act` linear ("none", the figure's) or ReLU (`activation`); returns T_1."""

    features: int = 48
    activation: str = "none"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, blocks: list[Array], mask: Array | None = None) -> Array:
        half, dt = self.features // 2, self.dtype
        act = BLF_ACTIVATIONS[self.activation]
        t = blocks[-1]
        for i in range(len(blocks) - 1, 0, -1):
            f_part = act(masked_conv(blocks[i - 1], mask, half, 1, dtype=dt, name=f"proj_f{i}"))
            t_part = act(masked_conv(t, mask, self.features - half, 1, dtype=dt, name=f"proj_t{i}"))
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
    blf_activation: str = "none"
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
        return BLF(c, self.blf_activation, dt, name="blf")(blocks, mask) + f0


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



class MSPAN(_MSPANConfig):
    """MSPAN for super-resolution: trunk (`body`) -> reconstruction (`rec_conv` 3x3, `upsampler`
    3x3 to out*s^2, pixel shuffle). x in [0, 1], NHWC."""

    scale: int = 4
    blf_activation: str = "none"  # after each BLF projection: "none" (linear, the figure's), "relu"

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        attention_class(self.attention)  # fails in one line on an unknown kind, before any init
        trunk = MSPANTrunk(self.num_features, self.num_blocks, self.num_units, self.distill_rate,
                           self.attention, self.attention_reduction, self.ca_reduction,
                           self.mspa_interactions, self.blf_activation, self.dtype, name="body")
        h = masked_conv(trunk(x, mask), mask, self.num_features, 3, dtype=self.dtype,
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


# config.model keys of the MSPAN reconstruction that preceded the paper's figures: a checkpoint that
# records them holds weights of another network.
RETIRED_MSPAN_KEYS = frozenset({"mspa_dilations", "use_mspa", "mspa_fusion"})
# The MSPAN-IR that was the SR trunk with one output conv: a config.model that records the trunk's
# keys but not `mlp_ratio` (networks.png (c)'s MLP) is of it, and so are its weights.
RETIRED_MSPAN_IR_KEYS = frozenset({"num_features", "num_blocks", "num_units", "attention"})


def _config_problem(model_config: Mapping[str, Any]) -> str | None:
    """Why MSPAN or MSPAN-IR cannot build `model_config` (retired keys, an unknown attention)."""
    retired = sorted(RETIRED_MSPAN_KEYS & set(model_config))
    if retired:
        return (f"config.model has {retired}: these weights are of the retired MSPAN reconstruction "
                "(IMDN's trunk, dilated-conv MSPA), and the MSPAN architecture changed to the "
                "paper's figures (docs/architecture.md); retrain, or use the shipped "
                "weights/mspan_x{2,3,4}")
    attention = model_config.get("attention", "mspa")
    if attention not in ATTENTIONS:
        return f"config.model.attention={attention!r}; choose one of {list(ATTENTIONS)}"
    blf = model_config.get("blf_activation", "none")
    if blf not in BLF_ACTIVATIONS:
        return f"config.model.blf_activation={blf!r}; choose one of {list(BLF_ACTIVATIONS)}"
    return None


def _ir_config_problem(model_config: Mapping[str, Any]) -> str | None:
    problem = _config_problem(model_config)
    retired = set(model_config) >= RETIRED_MSPAN_IR_KEYS and "mlp_ratio" not in model_config
    if problem is None and retired:
        return ("config.model mspan_ir has no 'mlp_ratio': these weights are of the retired MSPAN-IR "
                "layout (the SR trunk and one output conv), and MSPAN-IR changed to the "
                "paper's figure (c) (docs/restoration.md); retrain")
    return problem


def _pads_exactly(model: nn.Module) -> bool:
    """As the block attention: "none" and CA yes; MSPA and ESA no, their pooled, strided and resized
    branches see the padding and the padded size."""
    return attention_pads_exactly(model.attention)


def _min_input_size(model: nn.Module) -> int:
    """As the block attention: 1, MSPA 4, ESA 15."""
    return attention_min_size(model.attention)


def _attention_of(state_dict: Mapping[str, Any], block: str) -> str:
    """The block attention of a state_dict, by its module name in the first block."""
    kinds = [k for k in ("mspa", "ca", "esa")
             if any(key.startswith(f"{block}.{k}.") for key in state_dict)]
    return kinds[0] if kinds else "none"


def _describe_weights(state_dict: Mapping[str, Any]) -> str | None:
    if "IDDB1.AU1.weight" not in state_dict:
        return None
    if "out_conv.weight" in state_dict:
        return "an MSPAN-IR of the retired layout (SR trunk + out_conv; retrain)"
    text = describe_sr_weights("mspan", state_dict, "fea_conv.weight")
    return f"{text}, attention={_attention_of(state_dict, 'IDDB1')}"


def _describe_ir_weights(state_dict: Mapping[str, Any]) -> str | None:
    if "stage1.iddb.AU1.weight" not in state_dict:
        return None
    text = describe_sr_weights("mspan_ir", state_dict, "head_conv1.weight")
    return f"{text}, attention={_attention_of(state_dict, 'stage1.iddb')}"


# The MSPAN paper's printed rows (../shared/seed/MSPAN_paper.md): params rounded to thousands,
# mult-adds (1280x720 output) to 0.1 G, in the convention of multiply-adds plus one add per bias and
# the pooling ops (`complexity.count_ops`'s `macs_with_bias`). A row matches a config only when every
# other model setting is the default; the compute dtype does not matter.
#
# The x3 row (58.7 G) fits only the 426x240 (floor) LR input: at the papers' 427x240 (1280/3 rounded
# up, which IMDN's x3 71.5 G needs) our count is 58.8 G. No design whose cost per LR pixel is the
# same at every scale fits x2, x4 and x3-at-427 together: the x3 - x2 difference per pixel must be
# the upsampler's 6,495 mult-adds, and 58.7 G / 102,480 - 130.7 G / 230,400 = 5,521.
_MAIN = "main table"
_ABLATION = "attention ablation (x2)"
PAPER_ROWS = (
    PaperRow("mspan", 2, "mspa", 596, 130.7, "macs_with_bias", _MAIN),
    PaperRow("mspan", 3, "mspa", 603, 58.7, "macs_with_bias", _MAIN),
    PaperRow("mspan", 4, "mspa", 612, 33.6, "macs_with_bias", _MAIN),
    PaperRow("mspan", 2, "none", 543, 125.0, "macs_with_bias", _ABLATION),
    PaperRow("mspan", 2, "ca", 545, 125.1, "macs_with_bias", _ABLATION),
    PaperRow("mspan", 2, "esa", 582, 127.5, "macs_with_bias", _ABLATION),
)
# The restoration tables (Gaussian denoising, real-world denoising) print MSPAN-IR's params as
# "8.3x10^-5", beside DuRN's "8.2x10^-5": a dropped sign, 8.3 x 10^5 parameters (DuRN-P, the network
# of those tables, has 816,225; docs/restoration.md). It matches the paper's MSPAN-IR (the defaults,
# any attention printed: mspa) with 1 channel (the gray Gaussian table) or 3 (the real-world one).
# The tables print no mult-adds.
RESTORATION_ROW = RestorationRow(
    "mspan_ir", 8.3, 5, "8.3x10^-5 (read: 8.3 x 10^5)",
    "Gaussian denoising sigma 30/50/70 (gray) and real-world denoising (colour) tables")

SPECS = (
    ModelSpec(
        name="mspan",
        module=MSPAN,
        summary="MSPAN for super-resolution, as the paper's figures draw it",
        # The paper's MSPAN (docs/architecture.md): C=48, 6 IDDBs of 3 AU/CU pairs, 24 distilled
        # channels per AU, MSPA at C/4 with two interactions; `attention` picks the block attention
        # of the paper's ablation ("none", "ca", "esa", "mspa").
        # `blf_activation` "none": the figure's linear projections; `init` "torch": PyTorch's
        # Conv2d initialization, as IMDN's code that MSPAN builds on (docs/architecture.md).
        defaults=dict(num_features=48, num_blocks=6, num_units=3, distill_rate=0.5, attention="mspa",
                      attention_reduction=4, ca_reduction=16, mspa_interactions=2, in_channels=3,
                      out_channels=3, blf_activation="none", init="torch"),
        recorded_defaults=dict(blf_activation="relu"),  # ReLU projections before the key existed
        pads_exactly=_pads_exactly,
        min_input_size=_min_input_size,
        config_problem=_config_problem,
        torch_reference="mspan_jax.convert.torch_mspan:build_mspan",
        torch_names=((r"body/(.+)", r"\1"), (r"upsampler", "upsampler.0")),
        describe_weights=_describe_weights,
        paper_rows=PAPER_ROWS,
    ),
    ModelSpec(
        name="mspan_ir",
        module=MSPANIR,
        summary="MSPAN for restoration (denoising, deraining), the paper's figure (c)",
        # As networks.png (c) draws it (head, 6 x [IDDB, LN + MLP], tail, global skip); C=54 and an
        # MLP of 2C are the open widths that give the tables' 8.3 x 10^5 params (docs/restoration.md).
        # The IDDB is the SR one.
        defaults=dict(num_features=54, num_blocks=6, num_units=3, distill_rate=0.5, attention="mspa",
                      attention_reduction=4, ca_reduction=16, mspa_interactions=2, mlp_ratio=2.0,
                      in_channels=3, out_channels=3, init="torch"),
        tasks=("denoise", "derain"),
        pads_exactly=_pads_exactly,
        min_input_size=_min_input_size,
        config_problem=_ir_config_problem,
        torch_reference="mspan_jax.convert.torch_mspan:build_mspan_ir",
        # head_conv1, stage1/iddb/AU1, stage1/norm, ... as they are
        describe_weights=_describe_ir_weights,
        restoration_rows=(RESTORATION_ROW,),
    ),
)
