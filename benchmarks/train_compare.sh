#!/usr/bin/env bash
# The equal-budget comparison of configs/sun_hays_x4.py: trains each model for each seed with the same
# steps, patch and batch, one after another, then writes the table (benchmarks/compare_table.py).
#
#   bash benchmarks/train_compare.sh OUT STEPS HR_PATCH BATCH "MODELS" "SEEDS" [--config.x=y ...]
#   e.g. nice -n 10 bash benchmarks/train_compare.sh /tmp/cmp 600 96 8 "mspan imdn" "0 1"
#
# OUT/<model>_s<seed>/ is each run's workdir (checkpoints, eval_results.json, wall_s, model_info.json),
# OUT/<model>_s<seed>.log its console output. A run whose eval_results.json exists is skipped, so the
# command can be repeated after an interruption. RUN_CAP_S (default 3600) caps each run's seconds.
set -uo pipefail
[ $# -ge 6 ] || { echo "usage: $0 OUT STEPS HR_PATCH BATCH \"MODELS\" \"SEEDS\" [overrides]" >&2; exit 2; }
out=$1 steps=$2 patch=$3 batch=$4 models=$5 seeds=$6
shift 6
cap=${RUN_CAP_S:-3600}
mkdir -p "$out"
for seed in $seeds; do
  for model in $models; do
    run=$out/${model}_s${seed}
    [ -f "$run/eval_results.json" ] && { echo "$run: done before, skipped"; continue; }
    start=$(date +%s)
    timeout "$cap" python scripts/train.py --config "configs/sun_hays_x4.py:$model" --workdir "$run" \
      --config.seed="$seed" --config.train.num_steps="$steps" --config.data.hr_patch_size="$patch" \
      --config.train.batch_size="$batch" --config.train.eval_every_steps="$steps" \
      --config.train.checkpoint_every_steps="$steps" --config.train.steps_per_epoch="$steps" "$@" \
      > "$run.log" 2>&1
    rc=$?
    echo $(( $(date +%s) - start )) > "$run/wall_s"
    python scripts/model_info.py --config "configs/sun_hays_x4.py:$model" --json > "$run/model_info.json"
    echo "$run: exit $rc, $(cat "$run/wall_s") s; $(grep '^validation' "$run.log" | tail -1)"
  done
done
python benchmarks/compare_table.py "$out"
