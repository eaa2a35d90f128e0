#!/usr/bin/env bash
# One device command: the in-place GPU tests of the batched gradient check (the
# tensors' gradient buffers reduced eight per launch), then the step with gradients
# read in place, with and without the device gradient check, beside the build before
# it (lookup-index), twice each in turn, AdamW-24 on GPT-2 124M and Llama-3.1-8B x4.
# Binaries (built on the CPU machine, stripped):
#   .dev/batched.tar.xz: batched/gpu-tests (cargo test --release --features gpu-tests
#     --test gpu --no-run), batched/flashopt-bench-batched (cargo build --release
#     -p flashopt-bench)
#   .dev/next.tar.xz: next/flashopt-bench-lookup (the build before)
set -uo pipefail
out=${1:?OUT}
W=/tmp/batched-check
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/batched.tar.xz -C .dev
tar xJf .dev/next.tar.xz -C .dev next/flashopt-bench-lookup
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
FLASHOPT_GPU_REPORT=$W/gpu.md timeout 200 .dev/batched/gpu-tests --test-threads 1 in_place > $W/gpu-tests.log 2>&1
echo "gpu-tests rc=$?"
grep -E "test result|FAILED|panicked" $W/gpu-tests.log | head
for round in 1 2; do
  for b in next/flashopt-bench-lookup batched/flashopt-bench-batched; do
    n=$(basename $b)-$round
    timeout 150 .dev/$b run --out $W/$n --masters 24 --optimizers AdamW \
      --only "GPT-2 124M,Llama-3.1-8B x4 layers" > $W/$n.log 2>&1
    echo "$n rc=$?"; grep -h '^AdamW' $W/$n/flashopt.csv
    grep -o "gradients read in place.*" $W/$n.log
  done
done
echo "== done at ${SECONDS}s"
tar czf "$out/batched-check.tgz" -C $W .
