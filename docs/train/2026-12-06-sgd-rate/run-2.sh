#!/usr/bin/env bash
# Run 2 (one device command): where the small configuration's step time goes. Its
# runs keep the GPU busy (run 1's dmon: 97-98% of the time a kernel runs) at about 97 ms
# a step whether it computes in f32 or bf16, far above its arithmetic; ncu times every
# kernel of a window of steps (after warm-up and autotuning), summed per kernel name.
set -uo pipefail
out=${1:?OUT}
W=/tmp/sgd-rate-run-2
rm -rf $W && mkdir -p $W .dev/bin
exec > >(tee "$W/run-2.log") 2>&1
tar xJf .dev/train.tar.xz -C .dev/bin
timeout 400 ncu --clock-control none --metrics gpu__time_duration.sum \
  --launch-skip 15000 --launch-count 2000 --print-summary per-kernel --csv --print-units base \
  .dev/bin/train --backend cuda --config small --runs flashopt-bf16 --stop-after 60 \
  --out $W/small > $W/ncu-small.csv 2> $W/ncu-small.err
echo "ncu rc=$? at ${SECONDS}s"
tail -5 $W/ncu-small.err
tar czf "$out/run-2.tgz" -C $W .
