#!/usr/bin/env bash
# Run D (one device command, one H200): the bound's cost in the kernel (flashopt-bench,
# AdamW against AdamW-flashoptim, alone on the GPU), the adapter check, then the jobs of
# jobs-d.txt side by side (scripts/train_jobs.sh, 3 at a time) until 555 s.
set -uo pipefail
out=${1:?OUT}
W=/tmp/d
mkdir -p $W/logs
exec > >(tee "$out/run-d.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
.dev/bin/train --check-adapter 5 2>&1 | tail -2
.dev/bin/flashopt-bench run --out $W/bench --only "268M,GPT-2 124M" --masters 24 --optimizers AdamW,AdamW-flashoptim 2>&1 | tail -12
echo "== jobs from ${SECONDS}s"
scripts/train_jobs.sh $W 3 $((555 - SECONDS)) docs/train/2026-12-04-h200-gates/jobs-d.txt
cat $W/jobs.log
tail -3 $W/logs/gpu-tests.log
tar czf "$out/run-d.tgz" -C $W .
echo "== done at ${SECONDS}s"
