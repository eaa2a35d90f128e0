#!/usr/bin/env bash
# Run 2 (one device command, one H100): flashopt-bench alone on the GPU: the c5d5dec build's
# AdamW-24 (flashoptim's arithmetic, the only one it has) beside this build's AdamW-24 with
# flashoptim's arithmetic (AdamW-flashoptim) and the shipped AdamW-24 (momentum bounded by
# the second moment), 268M, GPT-2 124M and Llama-3.1-8B x4, alternated twice; the burn CUDA
# adapter check alone; then jobs-2.txt, 7 at a time, none started with under 300 s left,
# until 570 s. Binaries as in run-1.sh.
set -uo pipefail
out=${1:?OUT}
W=/tmp/small-gates-2
rm -rf $W && mkdir -p $W/logs $W/bench $W/gpu
exec > >(tee "$W/run-2.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev
tar xzf .dev/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
only="268M,GPT-2 124M,Llama-3.1-8B x4 layers"
for round in 1 2; do
  timeout 60 .dev/bin/flashopt-bench-before run --out $W/bench/before-$round --masters 24 \
    --optimizers AdamW --only "$only" > $W/bench/before-$round.log 2>&1
  echo "before round $round rc=$?"; grep -h "^AdamW\|copy" $W/bench/before-$round.log
  timeout 90 .dev/bin/flashopt-bench run --out $W/bench/this-$round --masters 24 \
    --optimizers AdamW-flashoptim,AdamW --only "$only" > $W/bench/this-$round.log 2>&1
  echo "this build round $round rc=$?"; grep -h "^AdamW\|copy" $W/bench/this-$round.log
done
timeout 120 .dev/bin/train --check-adapter 5 > $W/gpu/burn-adapter-check.log 2>&1
echo "burn adapter check rc=$?"; tail -2 $W/gpu/burn-adapter-check.log
echo "== jobs from ${SECONDS}s"
MIN_SECONDS=300 scripts/train_jobs.sh $W 7 $((570 - SECONDS)) docs/train/2026-12-06-small-gates/jobs-2.txt
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/run-2.tgz" -C $W .
