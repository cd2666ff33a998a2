"""The one shared base of every config in configs/: paper defaults for each section.

configs/*.py call `sr_config(...)` and change only what really differs.
"""

from __future__ import annotations

import ml_collections

MODEL_DEFAULTS = {
    # The reconstruction's defaults (docs/architecture.md): C=48, B=6 IDDBs, U=3 AU/CU pairs,
    # distillation 0.25, MSPA with a 1x1 branch and depthwise 3x3 branches at dilation 1 and 2.
    "mspan": dict(num_features=48, num_blocks=6, num_units=3, distill_rate=0.25,
                  mspa_dilations=(1, 2), in_channels=3, out_channels=3),
    "mspan_ir": dict(num_features=48, num_blocks=6, num_units=3, distill_rate=0.25,
                     mspa_dilations=(1, 2), in_channels=3, out_channels=3),
    # The official IMDN: nf=64, 6 IMDBs, distillation 0.25, CCA reduction 16.
    "imdn": dict(num_features=64, num_modules=6, distill_rate=0.25, cca_reduction=16,
                 in_channels=3, out_channels=3),
}


def model_config(name: str, scale: int) -> ml_collections.ConfigDict:
    """The `config.model` section for a registered model at a scale."""
    if name not in MODEL_DEFAULTS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_DEFAULTS)}")
    return ml_collections.ConfigDict(
        dict(name=name, scale=scale, dtype="float32", **MODEL_DEFAULTS[name])
    )


def sr_config(model: str = "mspan", scale: int = 4) -> ml_collections.ConfigDict:
    """A full config: model, data, train and eval sections for SR at `scale` (IMDN's recipe)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = model_config(model, scale)

    config.data = ml_collections.ConfigDict()
    config.data.hr_patch_size = 192  # LR patch = hr_patch_size // scale
    config.data.degradation = "BI"

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 16
    config.train.learning_rate = 2e-4
    config.train.adam_b1 = 0.9
    config.train.adam_b2 = 0.999
    config.train.loss = "l1"

    config.eval = ml_collections.ConfigDict()
    config.eval.datasets = ("set5",)
    config.eval.crop_border = scale  # shave `scale` pixels, as the papers' MATLAB scripts
    config.eval.y_channel = True
    config.eval.round_y = False
    return config
