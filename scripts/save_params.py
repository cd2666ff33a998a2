"""Writes the params of a training workdir as a params checkpoint: a few MB to ship or share.

  python scripts/save_params.py --checkpoint runs/mspan_x4 --out weights/mspan_x4

A workdir keeps the optimizer state and several steps; the params checkpoint keeps only the
weights that evaluation would use (WORKDIR/best, the highest validation PSNR, else the latest step;
the EMA params when kept) and the `config.model` they belong to, so `evaluate.py`, `upscale.py` and
`Upscaler.from_checkpoint` run it without a --config. Nothing is written on an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from absl import flags

from mspan_jax import cli
from mspan_jax.checkpoints.params import check_writable, save_params
from mspan_jax.checkpoints.resolve import load_model
from mspan_jax.storage import absolute

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training workdir (or a params checkpoint).")
_OUT = flags.DEFINE_string("out", None, "Output params checkpoint directory (must not exist).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --out directory.")
flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv: Sequence[str]) -> None:
    del argv
    out = absolute(_OUT.value)
    check_writable(out, overwrite=_OVERWRITE.value)
    loaded = load_model(_CHECKPOINT.value)  # the model the checkpoint records
    model_config = loaded.model_config
    n_params = sum(int(np.size(v)) for v in jax.tree.leaves(loaded.variables))
    save_params(out, loaded.variables, model_config, overwrite=_OVERWRITE.value)
    print(f"wrote {out}: {model_config['name']} x{model_config['scale']}, {n_params:,} parameters")


if __name__ == "__main__":
    cli.run(main)
