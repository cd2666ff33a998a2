"""What the project knows of one model, in one record: `ModelSpec`.

Each model file (`imdn.py`, `mspan.py`, ...) ends with `SPECS`, its specs; `registry.py` finds
them by scanning this package, so a new model is its file (plus its PyTorch reference and a
config). A spec holds the Flax module and its `config.model` defaults, the tasks it serves, how it
treats zero padding and its smallest input, the checks of a config section it refuses, its PyTorch
reference and the name map of its weights, and the paper rows its counts are checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import numpy as np

SR_TASKS = ("sr",)


def _pads_exactly(model: nn.Module) -> bool:
    del model
    return True


def _min_input_size(model: nn.Module) -> int:
    del model
    return 1


def _no_problem(model_config: Mapping[str, Any]) -> str | None:
    del model_config
    return None


@dataclass(frozen=True)
class PaperRow:
    """One printed row of a paper's table: the model, its scale and block attention, the figures."""

    model: str  # config.model.name
    scale: int
    attention: str | None  # the row's config.model.attention; None for a model without one
    params_k: int  # printed params, thousands
    mult_adds_g: float  # printed mult-adds for a 1280x720 output, G
    convention: str  # the `count_ops` key the printed mult-adds fit: "macs_with_bias" or "macs"
    table: str  # where the paper prints it

    @property
    def label(self) -> str:
        """e.g. 'MSPAN x2 (attention ca)', 'IMDN x4'."""
        head = f"{self.model.upper()} x{self.scale}"
        return head if self.attention is None else f"{head} (attention {self.attention})"


@dataclass(frozen=True)
class RestorationRow:
    """A restoration table's parameter figure: `mantissa` x 10^`exponent`, printed to 0.1."""

    model: str
    mantissa: float
    exponent: int
    printed: str  # as the tables print it
    tables: str
    channels: tuple[int, ...] = (1, 3)  # the in/out channel counts the tables' networks have

    @property
    def label(self) -> str:
        return f"{self.model.upper().replace('_IR', '-IR')} ({self.tables})"

    def ok(self, params: int) -> bool:
        """Whether `params` rounds to the printed mantissa (e.g. 8.25e5 <= params < 8.35e5)."""
        lo = (self.mantissa - 0.05) * 10**self.exponent
        return lo <= params < lo + 0.1 * 10**self.exponent


@dataclass(frozen=True)
class ModelSpec:
    """One model: everything the package asks of it, by `config.model.name`."""

    name: str  # config.model.name
    module: type[nn.Module]  # built as module(dtype=..., **config.model without name/dtype)
    defaults: Mapping[str, Any]  # its config.model keys (beside name, scale, dtype) and values
    summary: str = ""  # one line for tables and help texts
    tasks: tuple[str, ...] = SR_TASKS  # the config.task values it serves ("sr", "denoise", "derain")
    # Whether model.apply(variables, x, mask) on an x zero-padded beyond its validity mask gives the
    # unpadded output (then inference pads inputs to shared bucket sizes); and the smallest LR height
    # and width it runs on (also the size of the dummy input that builds its variables).
    pads_exactly: Callable[[nn.Module], bool] = _pads_exactly
    min_input_size: Callable[[nn.Module], int] = _min_input_size
    # A one-line reason to refuse a config.model section (e.g. keys of a retired architecture), or None.
    config_problem: Callable[[Mapping[str, Any]], str | None] = _no_problem
    # config.model keys added after checkpoints were recorded without them: key -> the value such a
    # record means (what the model computed before the key existed), e.g. MSPAN's
    # blf_activation="relu"; `registry.complete_record` fills them in.
    recorded_defaults: Mapping[str, Any] = field(default_factory=dict)
    # The PyTorch reference: "module:function", the function building the torch module (eval mode)
    # from config.model; imported only when asked for (torch is an optional extra).
    torch_reference: str | None = None
    # Flax module path regex -> torch module prefix template, tried in order (first full match);
    # other paths map as they are, '/' -> '.'.
    torch_names: tuple[tuple[str, str], ...] = ()
    # The value of white in the PyTorch reference's input and output: 1 for models on [0, 1], 255 for
    # weights trained on 0..255 (the Flax module then scales inside, so it takes [0, 1] like the rest).
    torch_pixel_range: float = 1.0
    # A guess at whether a PyTorch state_dict is this model's ('imdn x4, num_features=64') for error
    # hints, None when it is not.
    describe_weights: Callable[[Mapping[str, Any]], str | None] | None = None
    paper_rows: tuple[PaperRow, ...] = field(default=())
    restoration_rows: tuple[RestorationRow, ...] = field(default=())


def describe_sr_weights(name: str, state_dict: Mapping[str, Any], features_key: str,
                        upsampler_key: str = "upsampler.0.weight") -> str:
    """'<name> x<scale>, num_features=<n>' read from a state_dict's upsampler (out_channels * scale^2
    filters, assuming RGB) and first conv; the parts it cannot read are left out."""
    text = name
    up = state_dict.get(upsampler_key)
    if up is not None:
        scale = round((np.shape(up)[0] / 3) ** 0.5)
        text += f" x{scale}" if 3 * scale * scale == np.shape(up)[0] else ""
    fea = state_dict.get(features_key)
    return text + (f", num_features={np.shape(fea)[0]}" if fea is not None else "")
