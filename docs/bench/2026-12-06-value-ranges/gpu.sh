#!/usr/bin/env bash
# One device command: the GPU tests of the build with the value-range pass (every
# kernel's divisions and square roots are emitted from the plan's operand facts), and
# ncu's counters of its AdamW-24 step on 64M. Binaries in .dev/ranges.tar.xz, built on
# the CPU machine and stripped:
#   cargo test --release --features gpu-tests --test gpu --no-run   -> ranges/gpu-tests
#   cargo build --release -p flashopt-bench                          -> ranges/flashopt-bench
set -uo pipefail
out=${1:?OUT}
W=/tmp/value-ranges-gpu
rm -rf $W && mkdir -p $W
exec > >(tee "$W/gpu.log") 2>&1
tar xJf .dev/ranges.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
scripts/ncu_step.sh .dev/ranges/flashopt-bench $W/ncu > $W/ncu.log 2>&1
echo "ncu rc=$?"; grep -E "inst_executed|registers|throughput|stalled" $W/ncu.log | head -12
FLASHOPT_GPU_REPORT=$W/gpu.md timeout $((585 - SECONDS)) .dev/ranges/gpu-tests --test-threads 1 > $W/gpu-tests.log 2>&1
echo "gpu-tests rc=$?"
grep -E "test result|FAILED|panicked" $W/gpu-tests.log | head
echo "== done at ${SECONDS}s"
tar czf "$out/value-ranges-gpu.tgz" -C $W .
