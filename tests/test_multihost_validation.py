"""Validation on several processes: each scores its share of the images and all get the scores one
process computes alone (2 processes x 2 CPU devices against 1 process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    REPO_ROOT,
    free_port,
    random_rgb,
    random_variables,
    save_png,
    subprocess_env,
    tiny_train_config,
)

from mspan_jax.data.pairs import EvalPair
from mspan_jax.models.registry import get_model
from mspan_jax.train.validation import Validator, process_share

TIMEOUT = 300

# One process of the run: validates seeded random params of the tiny MSPAN on a folder of images,
# counting the images it scores itself; prints the scores as JSON.
SCRIPT = """
import json, sys
import jax
index, count, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.distributed.initialize(f"localhost:{port}", count, index)
sys.path.insert(0, "tests")
from conftest import random_variables, tiny_train_config
from mspan_jax import eval_suite
from mspan_jax.models.registry import get_model
from mspan_jax.train.validation import Validator

scored = []
real = eval_suite.evaluate_pairs
def counting(apply_fn, variables, pairs, **kwargs):
    scored.extend(p.name for p in pairs)
    return real(apply_fn, variables, pairs, **kwargs)
eval_suite.evaluate_pairs = counting
config = tiny_train_config(eval__datasets=(folder,), eval__num_summary_images=1)
model = get_model(config.model)
validator = Validator(config, model)
scores, pictures = validator(random_variables(model, seed=3)["params"])
print("RESULT " + json.dumps({"scores": scores, "scored": scored, "pictures": sorted(pictures),
                              "devices": jax.device_count()}))
"""


def _run(count: int, folder: Path) -> list[dict]:
    """Runs SCRIPT as the `count` processes of one run (2 CPU devices each); their results."""
    port = free_port()
    env = subprocess_env(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(i), str(count), str(port), str(folder)],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(count)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err[-3000:]
            line = next(x for x in out.splitlines() if x.startswith("RESULT "))
            results.append(json.loads(line.removeprefix("RESULT ")))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def test_process_share_splits_every_image_once_with_the_pictures_on_process_0():
    sizes = [(8, 8), (40, 40), (16, 16), (32, 8), (24, 24), (8, 16), (48, 40)]
    pairs = [EvalPair(f"p{k}", np.zeros((1, 1, 3), np.uint8), np.zeros((*hw, 3), np.uint8))
             for k, hw in enumerate(sizes)]
    for count in (1, 2, 3, 8):
        shares = [process_share(pairs, p, count, first=2) for p in range(count)]
        assert sorted(i for share in shares for i in share) == list(range(len(pairs)))
        assert {0, 1} <= set(shares[0])
    two = [process_share(pairs, p, 2) for p in range(2)]
    loads = [sum(sizes[i][0] * sizes[i][1] for i in share) for share in two]
    assert max(loads) - min(loads) <= 40 * 40  # balanced by pixels, not by count


@pytest.mark.slow
def test_two_processes_score_their_shares_and_get_one_process_scores(tmp_path):
    folder = tmp_path / "val"
    for k, (h, w) in enumerate([(32, 32), (48, 40), (24, 32), (40, 56), (32, 24)]):
        save_png(folder / f"img{k}.png", random_rgb(h, w, k))
    two = _run(2, folder)
    assert [r["devices"] for r in two] == [4, 4]  # 2 processes x 2 CPU devices
    names = sorted(two[0]["scored"] + two[1]["scored"])
    assert names == [f"img{k}" for k in range(5)]  # each image scored once, by one process
    assert two[0]["scored"] and two[1]["scored"]
    # One process (this one) on the same params: the same means, bit for bit (the processes
    # gather float64 scores as bits).
    config = tiny_train_config(eval__datasets=(str(folder),), eval__num_summary_images=1)
    model = get_model(config.model)
    scores, pictures = Validator(config, model)(random_variables(model, seed=3)["params"])
    for result in two:
        assert result["scores"] == json.loads(json.dumps(scores))
    assert two[0]["pictures"] == sorted(pictures) == [str(folder)]
    assert two[1]["pictures"] == []  # only process 0 draws (and writes) the pictures
