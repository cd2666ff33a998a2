"""Shared test fixtures: the read-only ../shared folder (Set5, official IMDN weights).

Tests that need it skip on an outside machine, but FAIL when MSPAN_REQUIRE_SHARED=1
(set by .ci/run), so a missing folder can never turn the proof tests green by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("MSPAN_SHARED_DIR", REPO_ROOT.parent / "shared"))


def require_shared(relative: str) -> Path:
    """Path of ../shared/<relative>; skips when absent, fails when MSPAN_REQUIRE_SHARED=1."""
    path = _shared_dir() / relative
    if not path.exists():
        message = f"{path} is missing (set MSPAN_SHARED_DIR to the shared folder)"
        if os.environ.get("MSPAN_REQUIRE_SHARED") == "1":
            pytest.fail(message + " and MSPAN_REQUIRE_SHARED=1 requires it")
        pytest.skip(message)
    return path


@pytest.fixture
def set5_dir() -> Path:
    """../shared/data/Set5 (HR/ and LR_bicubic/X{2,3,4}/)."""
    return require_shared("data/Set5")


@pytest.fixture
def imdn_x4_weights() -> Path:
    """../shared/weights/IMDN_x4.pth, the official IMDN x4 checkpoint."""
    return require_shared("weights/IMDN_x4.pth")
