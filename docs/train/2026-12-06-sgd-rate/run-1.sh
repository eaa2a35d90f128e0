#!/usr/bin/env bash
# Run 1 (one device command): jobs-1.txt 6 at a time until 450 s; then the small
# configuration alone for 300 steps, fp32 and then AdamW-24 (bf16 compute), with
# `nvidia-smi dmon` sampling the GPU's load: how busy a small run keeps the GPU, which
# decides whether small runs gain from sharing it. The train binary built on the CPU
# machine from this commit, stripped, carried as .dev/train.tar.xz.
set -uo pipefail
out=${1:?OUT}
W=/tmp/sgd-rate-run-1
rm -rf $W && mkdir -p $W/logs $W/small .dev/bin
exec > >(tee "$W/run-1.log") 2>&1
tar xJf .dev/train.tar.xz -C .dev/bin
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
scripts/train_jobs.sh $W 6 $((450 - SECONDS)) docs/train/2026-12-06-sgd-rate/jobs-1.txt
cat $W/jobs.log
for run in flashopt-fp32 flashopt-bf16; do
  (( SECONDS > 530 )) && break
  nvidia-smi dmon -s u -d 1 > $W/small/dmon-$run.txt 2>&1 &
  dmon=$!
  timeout $((585 - SECONDS)) .dev/bin/train --backend cuda --config small --runs $run \
    --stop-after 300 --out $W/small/$run > $W/small/$run.log 2>&1
  echo "small $run rc=$? at ${SECONDS}s"
  kill $dmon
done
echo "== done at ${SECONDS}s"
tar czf "$out/run-1.tgz" -C $W .
