"""Printed parameter and mult-add figures, and how ours compare with them.

The rows are the models' own (`ModelSpec.paper_rows` / `restoration_rows` in each model file); this
module finds the row a config is and judges our counts against it, for scripts/model_info.py and
tests/test_models.py. Params are printed to thousands, mult-adds (1280x720 output) to 0.1 G, each
row in the convention its figures fit (`complexity.count_ops`: `macs` or `macs_with_bias`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mspan_jax.models.registry import specs
from mspan_jax.models.spec import PaperRow, RestorationRow

PARAMS_TOLERANCE = 500  # printed in thousands: ours within +-500 of the printed figure
MULT_ADDS_TOLERANCE_G = 0.05  # printed to 0.1 G



def paper_rows() -> tuple[PaperRow, ...]:
    """Every registered model's printed rows."""
    return tuple(row for spec in specs().values() for row in spec.paper_rows)


# config.model keys that change neither params nor mult-adds: how params start, what follows BLF's
# projections.
UNCOUNTED_KEYS = frozenset({"init", "blf_activation"})


def _matches_defaults(cfg: Mapping[str, Any], defaults: Mapping[str, Any], skip: set[str]) -> bool:
    return all(cfg.get(key) == value for key, value in defaults.items()
               if key not in skip and key not in UNCOUNTED_KEYS)


def paper_row(model_config: Mapping[str, Any]) -> PaperRow | None:
    """The printed row of `config.model`, or None when the config is not one a paper prints: the
    model's defaults (the row's attention aside) at the row's scale; the compute dtype does not
    matter."""
    cfg = dict(model_config)
    spec = specs().get(cfg.get("name"))
    if spec is None or not _matches_defaults(cfg, spec.defaults, {"attention"}):
        return None
    for row in spec.paper_rows:
        if row.scale == cfg.get("scale") and row.attention == cfg.get("attention"):
            return row
    return None


def params_ok(row: PaperRow, params: int) -> bool:
    """Whether `params` rounds to the printed thousands."""
    return abs(params - row.params_k * 1000) <= PARAMS_TOLERANCE


def mult_adds_ok(row: PaperRow, mult_adds: int) -> bool:
    """Whether `mult_adds` (in the row's convention) rounds to the printed 0.1 G."""
    return abs(mult_adds / 1e9 - row.mult_adds_g) <= MULT_ADDS_TOLERANCE_G + 1e-9


def verdict(ok: bool) -> str:
    """'ok' or 'miss'."""
    return "ok" if ok else "miss"


def restoration_row(model_config: Mapping[str, Any]) -> RestorationRow | None:
    """The restoration tables' row for `config.model`: the model's defaults at scale 1 with one of
    the row's channel counts in and out; None otherwise."""
    cfg = dict(model_config)
    spec = specs().get(cfg.get("name"))
    if spec is None or cfg.get("scale") != 1:
        return None
    channels = cfg.get("in_channels")
    if cfg.get("out_channels") != channels:
        return None
    if not _matches_defaults(cfg, spec.defaults, {"in_channels", "out_channels"}):
        return None
    return next((row for row in spec.restoration_rows if channels in row.channels), None)
