"""Content hashes of the arrays in a checkpoint, recorded when it is written and checked when it is read.

Orbax stores raw array bytes without a checksum, so a copy damaged in transit or on a bad disk loads
without an error and gives garbage. Both checkpoint kinds (`checkpoints.params`'s params checkpoints
and the training checkpoints of `checkpoints.workdir` and train/checkpoint.py) record
`tree_digests(tree)` next to the arrays and call `verify(...)` on what they restore; a mismatch
raises `ChecksumError` naming the checkpoint and the first damaged array.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from mspan_jax.errors import UserError

ALGORITHM = "sha256"  # recorded beside the digests, so that a later change stays readable


class ChecksumError(UserError, ValueError):
    """A checkpoint's array does not match the content hash recorded when it was written."""


def _key(entry: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey (dataclasses, namedtuples), SequenceKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _host_array(leaf: Any) -> np.ndarray:
    """A leaf as host numpy; a (replicated) global array of a multi-process run via its local shard."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_data(0)
    return np.ascontiguousarray(np.asarray(leaf))


def array_digest(array: Any) -> str:
    """sha256 of an array's dtype, shape and bytes (C order) as hex."""
    array = _host_array(array)
    h = hashlib.new(ALGORITHM)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def tree_digests(tree: Any) -> dict[str, str]:
    """{'params/block_0/conv/kernel': digest, ...} for every array leaf of `tree`.

    Paths are the same for a dataclass (TrainState), its namedtuples and the nested dicts that
    orbax restores them as, so digests of a saved state check a restored plain tree too.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key(k) for k in path): array_digest(leaf) for path, leaf in flat}


def record(tree: Any) -> dict[str, Any]:
    """The JSON-ready record stored beside a checkpoint: {'algorithm', 'arrays': tree_digests}."""
    return {"algorithm": ALGORITHM, "arrays": tree_digests(tree)}


def verify(tree: Any, recorded: Mapping[str, Any] | None, checkpoint: Any, *,
           legacy: bool = False) -> None:
    """Raises ChecksumError (one line naming `checkpoint` and the array) unless every array of `tree`
    has the digest `recorded` (a `record(...)`) holds for it; arrays absent from `tree` are not checked,
    so a restored sub-tree (e.g. only the params) can be verified alone.

    `legacy=True` marks a checkpoint written before checksums existed: with nothing recorded it loads
    with a warning instead of being refused, so upgrading never strands a run or a converted model.
    """
    if legacy and recorded is None:
        warnings.warn(f"{checkpoint}: written before checkpoints recorded checksums, so it is loaded "
                      "unverified; save it again (or let training write a new step) to add them",
                      stacklevel=2)
        return
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("arrays"), Mapping):
        raise ChecksumError(f"{checkpoint}: records no checksums; it was written by an older version "
                            "or damaged; re-save or re-convert it")
    if recorded.get("algorithm") != ALGORITHM:
        raise ChecksumError(f"{checkpoint}: checksums use {recorded.get('algorithm')!r}, this version "
                            f"reads {ALGORITHM!r}")
    want = recorded["arrays"]
    for path, digest in tree_digests(tree).items():
        if path not in want:
            raise ChecksumError(f"{checkpoint}: array {path} has no recorded checksum; the checkpoint "
                                "is damaged or not the one its metadata describes")
        if want[path] != digest:
            raise ChecksumError(f"{checkpoint}: array {path} does not match its recorded checksum "
                                "(damaged on disk or in transit); restore the file from a good copy "
                                "or use another checkpoint")
