#!/usr/bin/env bash
# One device command: the GPU tests and both adapter checks of the build with the
# lookups, the unit index and the batched in-place gradient check (every kernel's lookups
# changed). Binaries in .dev/next.tar.xz, built from 41f8e41 on the CPU machine and
# stripped:
#   cargo test --release --features gpu-tests --test gpu --no-run   -> next/gpu-tests
#   cargo build --release --example train                           -> next/train
#   scripts/candle_cuda_build.sh target/candle-cuda --release       -> next/cuda_check
set -uo pipefail
out=${1:?OUT}
W=/tmp/lookup-index-gpu
rm -rf $W && mkdir -p $W
exec > >(tee "$W/gpu.log") 2>&1
tar xJf .dev/next.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
timeout 150 .dev/next/train --check-adapter 5 > $W/burn-adapter-check.log 2>&1
echo "burn adapter check rc=$?"; tail -2 $W/burn-adapter-check.log
scripts/cuda_libs.sh /tmp/cudalibs > $W/candle-libs.txt
LD_LIBRARY_PATH=$(tail -1 $W/candle-libs.txt) timeout 120 .dev/next/cuda_check 5 > $W/candle-cuda-check.log 2>&1
echo "candle cuda_check rc=$?"; tail -2 $W/candle-cuda-check.log
FLASHOPT_GPU_REPORT=$W/gpu.md timeout $((580 - SECONDS)) .dev/next/gpu-tests --test-threads 1 > $W/gpu-tests.log 2>&1
echo "gpu-tests rc=$?"
grep -E "test result|FAILED|panicked" $W/gpu-tests.log | head
echo "== done at ${SECONDS}s"
tar czf "$out/lookup-index-gpu.tgz" -C $W .
