"""The MSPAN paper's printed parameter and mult-add figures, and how ours compare with them.

One table (`PAPER_ROWS`) for scripts/model_info.py and tests/test_models.py. The figures are the
paper's (../shared/seed/MSPAN_paper.md): params rounded to thousands, mult-adds (1280x720 output) to
0.1 G. The table mixes two conventions (`complexity.count_ops`): the MSPAN rows fit multiply-adds
plus one add per bias and the pooling ops (`macs_with_bias`), the IMDN rows are the IMDN paper's
pure multiply-adds (`macs`). A row matches a config only when every model setting is the paper's
(MODEL_DEFAULTS, with the row's `attention`); the compute dtype does not matter.

The MSPAN x3 row (58.7 G) fits only the 426x240 (floor) LR input: at the papers' 427x240 (1280/3
rounded up, which IMDN's x3 71.5 G needs) our count is 58.8 G. No design whose cost per LR pixel
is the same at every scale fits x2, x4 and x3-at-427 together: the x3 - x2 difference per pixel
must be the upsampler's 6,495 mult-adds, and 58.7 G / 102,480 - 130.7 G / 230,400 = 5,521.

The restoration tables (Gaussian denoising, real-world denoising) print MSPAN-IR's params as
"8.3x10^-5", beside DuRN's "8.2x10^-5": a dropped sign, 8.3 x 10^5 parameters (DuRN-P, the
network of those tables, has 816,225; docs/restoration.md). `RESTORATION_ROW` is that figure;
it matches the paper's MSPAN-IR (MODEL_DEFAULTS["mspan_ir"], any attention printed: mspa) with
1 channel (the gray Gaussian table) or 3 (the real-world one). The tables print no mult-adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mspan_jax.config_base import MODEL_DEFAULTS

PARAMS_TOLERANCE = 500  # printed in thousands: ours within +-500 of the printed figure
MULT_ADDS_TOLERANCE_G = 0.05  # printed to 0.1 G


@dataclass(frozen=True)
class PaperRow:
    """One printed row: the model, its scale and block attention, and the printed figures."""

    model: str  # config.model.name
    scale: int
    attention: str | None  # MSPAN's config.model.attention; None for IMDN
    params_k: int  # printed params, thousands
    mult_adds_g: float  # printed mult-adds for a 1280x720 output, G
    convention: str  # the `count_ops` key the printed mult-adds fit: "macs_with_bias" or "macs"
    table: str  # where the paper prints it

    @property
    def label(self) -> str:
        """e.g. 'MSPAN x2 (attention ca)', 'IMDN x4'."""
        head = f"{self.model.upper()} x{self.scale}"
        return head if self.attention is None else f"{head} (attention {self.attention})"


_MAIN = "main table"
_ABLATION = "attention ablation (x2)"
PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("mspan", 2, "mspa", 596, 130.7, "macs_with_bias", _MAIN),
    PaperRow("mspan", 3, "mspa", 603, 58.7, "macs_with_bias", _MAIN),
    PaperRow("mspan", 4, "mspa", 612, 33.6, "macs_with_bias", _MAIN),
    PaperRow("mspan", 2, "none", 543, 125.0, "macs_with_bias", _ABLATION),
    PaperRow("mspan", 2, "ca", 545, 125.1, "macs_with_bias", _ABLATION),
    PaperRow("mspan", 2, "esa", 582, 127.5, "macs_with_bias", _ABLATION),
    PaperRow("imdn", 2, None, 694, 158.8, "macs", _MAIN),
    PaperRow("imdn", 3, None, 703, 71.5, "macs", _MAIN),
    PaperRow("imdn", 4, None, 715, 40.9, "macs", _MAIN),
)


def paper_row(model_config: Mapping[str, Any]) -> PaperRow | None:
    """The paper's row for `config.model`, or None when the config is not one the paper prints."""
    cfg = dict(model_config)
    name = cfg.get("name")
    if name not in ("mspan", "imdn"):
        return None
    defaults = dict(MODEL_DEFAULTS[name])
    attention = cfg.get("attention") if name == "mspan" else None
    defaults.pop("attention", None)
    if any(cfg.get(key) != value for key, value in defaults.items()):
        return None
    for row in PAPER_ROWS:
        if (row.model, row.scale, row.attention) == (name, cfg.get("scale"), attention):
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


@dataclass(frozen=True)
class RestorationRow:
    """The restoration tables' parameter figure: `mantissa` x 10^`exponent`, printed to 0.1."""

    model: str
    mantissa: float
    exponent: int
    printed: str  # as the tables print it
    tables: str

    @property
    def label(self) -> str:
        return f"{self.model.upper().replace('_IR', '-IR')} ({self.tables})"

    def ok(self, params: int) -> bool:
        """Whether `params` rounds to the printed mantissa (8.25e5 <= params < 8.35e5)."""
        lo = (self.mantissa - 0.05) * 10**self.exponent
        return lo <= params < lo + 0.1 * 10**self.exponent


RESTORATION_ROW = RestorationRow(
    "mspan_ir", 8.3, 5, "8.3x10^-5 (read: 8.3 x 10^5)",
    "Gaussian denoising sigma 30/50/70 (gray) and real-world denoising (colour) tables")


def restoration_row(model_config: Mapping[str, Any]) -> RestorationRow | None:
    """The restoration tables' row for `config.model`: the paper's MSPAN-IR (MODEL_DEFAULTS, MSPA)
    with 1 or 3 channels; None otherwise."""
    cfg = dict(model_config)
    if cfg.get("name") != "mspan_ir" or cfg.get("scale") != 1:
        return None
    channels = cfg.get("in_channels")
    if channels not in (1, 3) or cfg.get("out_channels") != channels:
        return None
    defaults = {k: v for k, v in MODEL_DEFAULTS["mspan_ir"].items()
                if k not in ("in_channels", "out_channels")}
    if any(cfg.get(key) != value for key, value in defaults.items()):
        return None
    return RESTORATION_ROW
