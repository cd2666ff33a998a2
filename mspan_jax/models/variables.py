"""A model's variables tree without computing it, and a one-line diff of two trees: what checkpoint
loading, weight conversion and warm starts check a tree against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from mspan_jax.models.complexity import abstract_variables
from mspan_jax.models.registry import get_model, min_input_size


def expected_variables(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The variables tree `get_model(model_config).init` creates, as ShapeDtypeStructs (traced on
    the model's smallest input)."""
    model = get_model(model_config)
    size = min_input_size(model)
    channels = int(model_config.get("in_channels", 3))
    return abstract_variables(model, (1, size, size, channels))


def _shape_tree(tree: Any) -> dict[str, tuple[int, ...]]:
    """'a/b/kernel' -> shape, for every leaf of a nested mapping."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): tuple(int(d) for d in np.shape(leaf))
        for path, leaf in flat
    }


def tree_mismatch(expected: Any, actual: Any, limit: int = 8) -> str | None:
    """None when both trees have the same paths and shapes, else a one-line summary of the
    missing paths, unexpected paths and shape mismatches (each list cut to `limit`)."""
    want, have = _shape_tree(expected), _shape_tree(actual)
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    shapes = [f"{k} has {have[k]}, expected {want[k]}"
              for k in sorted(set(want) & set(have)) if want[k] != have[k]]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            shown = ", ".join(items[:limit]) + more
            parts.append(f"{label} [{len(items)}]: {shown}")
    return "; ".join(parts) if parts else None
