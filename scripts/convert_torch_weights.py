"""Converts PyTorch weights (.pth/.pt, legacy or zip, or .safetensors) into a params checkpoint.

  python scripts/convert_torch_weights.py --model imdn --scale 4 \\
      --src IMDN_x4.pth --out imdn_x4 --verify

The model is `config_base.model_config(--model, --scale)`, or `config.model` of --config (whose keys
take overrides, e.g. --config.model.num_features=64); --attention picks MSPAN's block attention
(none, ca, esa or mspa: the paper's ablation), e.g. `--model mspan --scale 2 --attention esa`.
--verify runs the PyTorch reference model with the same state_dict and the Flax model with the
converted params on one random input and refuses (exit 1, nothing written) a max abs
difference above 1e-4. See docs/conversion.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.checkpoints.params import check_writable, save_params
from mspan_jax.config_base import model_config
from mspan_jax.convert import convert_state_dict, read_weights
from mspan_jax.convert.torch_io import DEFAULT_MAX_BYTES
from mspan_jax.errors import ConfigError
from mspan_jax.extras import require
from mspan_jax.models.attention import ATTENTIONS
from mspan_jax.models.registry import model_names

VERIFY_TOLERANCE = 1e-4
VERIFY_INPUT_HW = (32, 40)

_MODEL = flags.DEFINE_enum("model", None, model_names(), "Architecture of the weights.")
_SCALE = flags.DEFINE_integer("scale", None, "Upscaling factor (1 for mspan_ir).")
_ATTENTION = flags.DEFINE_enum("attention", None, list(ATTENTIONS), "MSPAN's block attention "
                               "(default: the config's, the paper's mspa).")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file whose config.model is used "
                                          "instead of --model/--scale, e.g. configs/imdn_x4.py.")
_SRC = flags.DEFINE_string("src", None, "PyTorch weight file (.pth, .pt or .safetensors).")
_OUT = flags.DEFINE_string("out", None, "Output params checkpoint directory (must not exist).")
_VERIFY = flags.DEFINE_bool("verify", False, "Compare PyTorch and Flax outputs before writing.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --out directory.")
_PARAM_KEY = flags.DEFINE_string("param-key", None, "The entry of a file holding several state_dicts "
                                 "to convert, e.g. 'params' of a BasicSR file (default: 'params_ema' "
                                 "when present, the EMA weights BasicSR tests with).")
_MAX_PTH_MB = flags.DEFINE_integer(
    "max_pth_mb", DEFAULT_MAX_BYTES >> 20, "The most MB a .pth/.pt read may materialize (its storages "
    "and the tensors cut from them, about twice the file); a crafted file cannot ask for more.",
    lower_bound=1)
flags.mark_flags_as_required(["src", "out"])


def resolve_model_config() -> Any:
    """config.model from --config, or from --model/--scale[/--attention]; a flag given beside
    --config must agree with it."""
    config = _CONFIG.value
    if config is None:
        if _MODEL.value is None or _SCALE.value is None:
            raise ConfigError("pass --model and --scale, or --config")
        cfg = model_config(_MODEL.value, _SCALE.value)
        if _ATTENTION.value is not None:
            if "attention" not in cfg:
                raise ConfigError(f"--attention: {cfg.name} has no block attention to choose; it is "
                                  "for mspan and mspan_ir")
            cfg.attention = _ATTENTION.value
        return cfg
    cfg = config.model
    for flag, key in ((_MODEL, "name"), (_SCALE, "scale"), (_ATTENTION, "attention")):
        if flag.value is not None and flag.value != cfg.get(key):
            raise ConfigError(f"--{flag.name}={flag.value} disagrees with the config's model.{key}="
                              f"{cfg.get(key)}; drop one of them (or override the config: "
                              f"--config.model.{key}={flag.value})")
    return cfg


def main(argv: Sequence[str]) -> None:
    cfg = resolve_model_config()
    out = Path(_OUT.value)
    check_writable(out, overwrite=_OVERWRITE.value)
    if _VERIFY.value:
        require("torch", "--verify (it runs the PyTorch reference model)")
    state_dict, entry, others = read_weights(_SRC.value, _PARAM_KEY.value,
                                             max_bytes=_MAX_PTH_MB.value << 20)
    n_params = sum(int(np.size(v)) for v in state_dict.values())
    where = f" (entry '{entry}')" if entry else ""
    print(f"read {len(state_dict)} tensors ({n_params:,} parameters) from {_SRC.value}{where}")
    if others:
        print(f"the file also holds {', '.join(repr(k) for k in others)}; pass --param-key to convert "
              "that instead")
    variables = convert_state_dict(cfg, state_dict)
    attention = f", attention {cfg['attention']}" if "attention" in cfg else ""
    print(f"converted to {cfg['name']} x{cfg['scale']} (num_features={cfg['num_features']}{attention})")
    if _VERIFY.value:
        from mspan_jax.convert.torch_reference import max_abs_difference

        diff = max_abs_difference(cfg, state_dict, variables, VERIFY_INPUT_HW)
        h, w = VERIFY_INPUT_HW
        print(f"verify: max |flax - torch| = {diff:.3g} on a random 1x{cfg['in_channels']}x{h}x{w} "
              f"input (tolerance {VERIFY_TOLERANCE:g})")
        if not diff <= VERIFY_TOLERANCE:
            cli.fail(f"verification failed: max abs difference {diff:.3g} > {VERIFY_TOLERANCE:g}; "
                     f"nothing written to {out}", code=1)
    save_params(out, variables, cfg, overwrite=_OVERWRITE.value)
    print(f"wrote {out}")


if __name__ == "__main__":
    cli.run(main)
