#!/usr/bin/env bash
# Run 3 (one device command): the small configuration's gates with burn's kernel
# autotuning on. Warm-up runs of 2 steps (f32 and bf16 compute, f32 and bf16 loss) fill
# cubecl's autotune cache (target/autotune) first, so that the jobs, which read it, pick
# the same kernels; then jobs-3.txt 3 at a time until 560 s. The cache comes back with the
# outputs (autotune.tgz) for later runs to carry. The train binary built on the CPU
# machine from this commit, stripped, carried as .dev/train.tar.xz.
set -uo pipefail
out=${1:?OUT}
W=/tmp/sgd-rate-run-3
rm -rf $W && mkdir -p $W/logs $W/warmup .dev/bin
exec > >(tee "$W/run-3.log") 2>&1
tar xJf .dev/train.tar.xz -C .dev/bin
[ -f .dev/autotune.tgz ] && tar xzf .dev/autotune.tgz && echo "autotune cache carried in"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
.dev/bin/train --backend cuda --config small --clip 1 --steps 2 --runs flashopt-fp32,flashopt-bf16 \
  --out $W/warmup/f32-loss > $W/logs/warmup-f32-loss.log 2>&1
echo "warm-up f32 loss rc=$? at ${SECONDS}s"
.dev/bin/train --backend cuda --config small --clip 1 --steps 2 --bf16-loss --runs flashopt-bf16 \
  --out $W/warmup/bf16-loss > $W/logs/warmup-bf16-loss.log 2>&1
echo "warm-up bf16 loss rc=$? at ${SECONDS}s"
find target -path '*autotune*' -type f | head -20
scripts/train_jobs.sh $W 3 $((560 - SECONDS)) docs/train/2026-12-06-sgd-rate/jobs-3.txt
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/autotune.tgz" $(find target -maxdepth 2 -path '*autotune*' -prune)
tar czf "$out/run-3.tgz" -C $W .
