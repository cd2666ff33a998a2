"""The guards of the proof tests: without torch they skip on an outside machine but FAIL in CI
(MSPAN_REQUIRE_SHARED=1), so the paper-number and parity proofs can never pass by not running."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT, subprocess_env

PROOF_TESTS = ("tests/test_imdn_official.py", "tests/test_convert.py")


def _pytest_without_torch(tmp_path, **env: str) -> subprocess.CompletedProcess:
    blocker = tmp_path / "blocked" / "torch"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text('raise ImportError("torch is blocked by test_require")\n')
    environment = subprocess_env(**env)
    environment["PYTHONPATH"] = f"{blocker.parent}:{REPO_ROOT}"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *PROOF_TESTS], cwd=REPO_ROOT, env=environment, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_proof_tests_fail_without_torch_when_required_and_skip_otherwise(tmp_path):
    required = _pytest_without_torch(tmp_path, MSPAN_REQUIRE_SHARED="1")
    assert required.returncode != 0, required.stdout[-2000:]
    assert required.stdout.count("MSPAN_REQUIRE_SHARED=1 requires it") >= len(PROOF_TESTS), \
        required.stdout[-2000:]
    optional = _pytest_without_torch(tmp_path, MSPAN_REQUIRE_SHARED="0")
    assert optional.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, optional.stdout[-2000:]
    assert f"{len(PROOF_TESTS)} skipped" in optional.stdout, optional.stdout[-2000:]
