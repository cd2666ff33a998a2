#!/usr/bin/env bash
# The equal-budget comparison (configs/sun_hays_x4.py) at GPU size, in ONE device call, results in $OUT.
#
# 1. Here, once, from the project's root (copies the photos and Set5 into the ignored .device_data/,
#    and the wheels the GPU image lacks into .whl/ via ../shared/tools/device-wheels.sh):
#        bash benchmarks/train_compare_gpu.sh --prepare
# 2. One `run` of the device tool, carry [".whl", ".device_data"], timeout_s 600:
#        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
#          .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/train_compare_gpu.sh
#    PART picks what one call runs (a 10-minute call holds one part):
#      PART=compare (default): MODELS "mspan imdn" x SEEDS "0 1", the equal-budget comparison;
#      PART=ablation: MODELS "mspan no_attention ca esa" x SEEDS "0 1", the paper's attention ablation;
#      PART=release: the x4 release recipe (configs/sun_hays_release.py:4 at LR patch 48) for
#        RELEASE_STEPS (default 30000) steps, then its params in $OUT/mspan_x4 (scripts/save_params.py):
#        a capped run resumes exactly, so carry $OUT/release_x4 back to continue it in the next call.
#    Comparison runs train STEPS steps each (default 4000) at LR patch 48, batch 16 (the papers'),
#    each capped at RUN_CAP_S seconds (default 130: four runs fit one call; release: 540), and leave
#    under $OUT: <model>_s<seed>/ (checkpoints, eval_results.json, wall_s, model_info.json),
#    <model>_s<seed>.log and table.md. Tens of thousands of steps per model need several calls.
# CPU check of this script's path (tiny, no GPU): OUT=/tmp/x STEPS=2 PATCH=32 BATCH=2 MODELS=mspan \
#   SEEDS=0 DATA=../shared/data bash benchmarks/train_compare_gpu.sh [--config.model.num_features=8]
set -euo pipefail
[ -f pyproject.toml ] || { echo "run this from the project's root" >&2; exit 2; }
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .device_data .git/info
  grep -qx '/.device_data/' .git/info/exclude 2>/dev/null || echo '/.device_data/' >> .git/info/exclude
  cp -r ../shared/data/Sun_Hays80 ../shared/data/Set5 .device_data/
  bash ../shared/tools/device-wheels.sh
  du -sh .device_data .whl
  exit 0
fi
out=${OUT:?set OUT (the device tool sets it)}
mkdir -p "$out"
data=${DATA:-.device_data}
[ -d "$data/Sun_Hays80" ] && [ -d "$data/Set5" ] || {
  echo "$data/Sun_Hays80 and $data/Set5 are missing: run with --prepare first and carry .device_data" >&2
  exit 2; }
patch=$(( ${PATCH:-48} * 4 ))
nvidia-smi -L 2>/dev/null || echo "no GPU visible: running on $(python -c 'import jax; print(jax.devices())')"
part=${PART:-compare}
case $part in
  compare) models=${MODELS:-mspan imdn} ;;
  ablation) models=${MODELS:-mspan no_attention ca esa} ;;
  release)
    rc=0
    timeout "${RUN_CAP_S:-540}" python scripts/train.py --config configs/sun_hays_release.py:4 \
      --workdir "$out/release_x4" --config.train.num_steps="${RELEASE_STEPS:-30000}" \
      --config.data.hr_patch_size="$patch" --config.train.batch_size="${BATCH:-16}" \
      --config.data.train_dir="$data/Sun_Hays80" --config.eval.datasets="('$data/Set5',)" \
      --config.train.log_every_steps=500 "$@" > "$out/release_x4.log" 2>&1 || rc=$?
    echo "release_x4: exit $rc (124: capped; the same command resumes it)"; tail -3 "$out/release_x4.log"
    python scripts/save_params.py --checkpoint "$out/release_x4" --out "$out/mspan_x4"
    exit $? ;;
  *) echo "PART=$part: choose compare, ablation or release" >&2; exit 2 ;;
esac
export RUN_CAP_S=${RUN_CAP_S:-130}
bash benchmarks/train_compare.sh "$out" "${STEPS:-4000}" "$patch" "${BATCH:-16}" \
  "$models" "${SEEDS:-0 1}" --config.data.train_dir="$data/Sun_Hays80" \
  --config.eval.datasets="('$data/Set5',)" --config.train.log_every_steps=500 "$@"
