#!/usr/bin/env bash
# Prints the job list (for scripts/train_jobs.sh) of the training gates of one
# configuration: for each seed and each shipped rule (AdamW, Lion, SGD), the rule in fp32
# and its 24-bit version (AdamW's 32-bit too) with the f32 loss, and the compressed ones
# with the bf16 loss, clipped to global norm 1 (docs/TRAINING.md, "Gates"). The runs of
# one folder share a process: each process compiles its kernels once.
#
# Usage: scripts/gate_jobs.sh CONFIG BIN SEED... > jobs.txt
#   CONFIG  the example's --config (small, gpt350m)
#   BIN     the train binary as the job runs it (e.g. .dev/bin/train)
# Skip runs already made with SKIP="seed2026-adamw-f32-loss:flashopt-fp32 ..." (folder:label).
# PER_RUN=1 prints one job per run instead of one per folder (more processes side by side,
# each compiling its own kernels).
set -euo pipefail
config=${1:?CONFIG} bin=${2:?BIN}
shift 2
(( $# > 0 )) || { echo "gate_jobs.sh: give at least one seed" >&2; exit 2; }
skip=" ${SKIP:-} "
for seed in "$@"; do
  for rule in adamw lion sgd; do
    for loss in f32 bf16; do
      case $loss in
        f32) labels="flashopt-fp32 flashopt-bf16"; flag="" ;;
        bf16) labels="flashopt-bf16"; flag=" --bf16-loss" ;;
      esac
      [ $rule = adamw ] && labels="$labels flashopt-bf16-32"
      folder="seed$seed-$rule-$loss-loss"
      runs=""
      for label in $labels; do
        [[ $skip == *" $folder:$label "* ]] && continue
        runs="${runs:+$runs,}$label"
      done
      [ -n "$runs" ] || continue
      if [ "${PER_RUN:-0}" = 1 ]; then jobs=${runs//,/ }; else jobs=$runs; fi
      for job in $jobs; do
        echo "$bin --backend cuda --config $config --clip 1 --seed $seed --optimizer $rule$flag" \
          "--runs $job --out \$W/$config/$folder > \$W/logs/$config-$folder-${job//,/-}.log 2>&1"
      done
    done
  done
done
