"""Validation PSNR of the EMA of the weights against the raw weights, at each saved step of a
quickstart-sized CPU run (configs/quickstart.py with an EMA of decay 0.999, warmed up as
`train.step.ema_warmup_decay` says), so the value of the EMA at 1,000 and 4,000 steps can be read.

    nice -n 10 python benchmarks/ema_vs_raw.py --workdir /tmp/ema_vs_raw --steps 4000

Trains (or resumes) the workdir to --steps, saving every --every steps, then validates both the
params and the EMA of every saved step on the config's validation set. Numbers: docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "configs"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--every", type=int, default=1000, help="checkpoint and validation interval")
    ap.add_argument("--ema_decay", type=float, default=0.999)
    ap.add_argument("--train", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--num_features", type=int, default=None, help="a narrower MSPAN (default 48)")
    ap.add_argument("--num_blocks", type=int, default=None, help="fewer blocks (default 6)")
    args = ap.parse_args()

    import quickstart

    from mspan_jax.checkpoints.workdir import RESUME_DIR, _restore_host_tree, open_manager
    from mspan_jax.models.registry import get_model
    from mspan_jax.train.checkpoint import saved_steps
    from mspan_jax.train.loop import train_and_evaluate
    from mspan_jax.train.validation import Validator, host_params

    config = quickstart.get_config()
    config.train.ema_decay = args.ema_decay
    config.train.num_steps = args.steps
    config.train.checkpoint_every_steps = config.train.eval_every_steps = args.every
    config.train.keep_checkpoints = args.steps // args.every + 1
    for key in ("num_features", "num_blocks"):
        if getattr(args, key) is not None:
            config.model[key] = getattr(args, key)
    if args.train:
        train_and_evaluate(config, args.workdir)

    validator = Validator(config, get_model(config.model))
    dataset = config.eval.datasets[0]
    for step in saved_steps(args.workdir):
        manager = open_manager(Path(args.workdir) / RESUME_DIR, keep=config.train.keep_checkpoints,
                               async_save=False, best=False)
        state = _restore_host_tree(manager, step)
        row = {"step": step}
        for name in ("params", "ema_params"):
            scores, _ = validator(host_params(state[name]))
            row[name] = {k: round(float(v), 4) for k, v in scores[dataset].items()}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
