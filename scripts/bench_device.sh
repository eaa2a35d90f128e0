#!/usr/bin/env bash
# The benchmark in one device command: flashopt-bench and flashoptim + torch
# (scripts/bench_reference.py) side by side on the same GPU, then ncu's counters of
# the fused step and of the gradient check. Binaries are built on the development
# machine and carried in .dev/bin, flashoptim 0.1.4 unpacked in .dev/pylib:
#
#   cargo build --release -p flashopt-bench && cp target/release/flashopt-bench .dev/bin/
#   pip download flashoptim==0.1.4 --no-deps -d /tmp/whl   # unpack into .dev/pylib
#
# Usage on the GPU machine: scripts/bench_device.sh OUT [all|tests|flashopt|reference|ncu]
# (the stages of `all` one by one, for the 10-minute limit of a device command). Then,
# anywhere: flashopt-bench report OUT --plot OUT/gbps.png > OUT/report.md
#
# `tests` runs the GPU tests first (bit-exact against the CPU reference; binary from
# `cargo test --release --features gpu-tests --test gpu --no-run`, as .dev/bin/gpu-tests).
set -uo pipefail
out=${1:?OUT folder}
stage=${2:-all}
mkdir -p "$out"
bin=.dev/bin/flashopt-bench
small="4M,64M,268M,GPT-2 124M"
llama="Llama-3.1-8B x4 layers"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$out/device.txt"
# The matrix stage's tests run cuBLAS too.
export LD_LIBRARY_PATH=$(scripts/cuda_libs.sh /tmp/cublas libcublas.so.13 libcublasLt.so.13 | tail -1)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if [[ $stage == all || $stage == tests ]]; then
  FLASHOPT_GPU_REPORT="$out/gpu.md" .dev/bin/gpu-tests --test-threads 1 2>&1 | tee "$out/gpu-tests.log"
fi
if [[ $stage == all || $stage == flashopt ]]; then
  # Every shipped optimizer in the 24-bit master mode, exact; AdamW, Lion and SGD on
  # Llama and in the opt-in approximate arithmetic; the approximate AdamW at 4 and 8
  # lanes per unit.
  "$bin" run --out "$out/exact" --only "$small" --masters 24 2>&1 | tee "$out/flashopt.log"
  "$bin" run --out "$out/llama" --only "$llama" --masters 24 --optimizers AdamW,Lion,SGD 2>&1 | tee "$out/flashopt-llama.log"
  "$bin" run --out "$out/approximate" --only "$small,$llama" --masters 24 --optimizers AdamW,Lion,SGD \
    --arithmetic approximate 2>&1 | tee "$out/flashopt-approximate.log"
  "$bin" run --out "$out/sweep" --only 268M --masters 24 --optimizers AdamW --lanes 4,8 \
    --arithmetic exact,approximate 2>&1 | tee "$out/flashopt-sweep.log"
  cp "$out/exact/flashopt.csv" "$out/flashopt.csv"
  cp "$out/llama/flashopt.csv" "$out/flashopt-llama.csv"
  cp "$out/approximate/flashopt.csv" "$out/flashopt-approximate.csv"
  cp "$out/sweep/flashopt.csv" "$out/flashopt-sweep.csv"
fi
if [[ $stage == all || $stage == reference ]]; then
  PYTHONPATH=.dev/pylib python3 scripts/bench_reference.py "$out/reference.csv" "$small,$llama" 2>&1 | tee "$out/reference.log"
fi
if [[ $stage == all || $stage == ncu ]] && command -v ncu >/dev/null; then
  for arithmetic in exact approximate; do
    for o in AdamW Lion SGD; do
      ncu --clock-control none -k regex:flashopt --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section Occupancy --section LaunchStats \
        --metrics smsp__thread_inst_executed.sum,smsp__inst_executed.sum \
        "$bin" run --out /tmp/ncu-run --only 64M --optimizers $o --masters 24 --arithmetic $arithmetic \
        > "$out/ncu-$o-24-$arithmetic-64M.txt" 2>&1
      grep -E "smsp__inst_executed.sum|Registers Per|Achieved Occupancy|^    Duration|DRAM Throughput" \
        "$out/ncu-$o-24-$arithmetic-64M.txt" | sed "s/^/$o $arithmetic: /"
    done
  done
  # The gradient check's reduction pass: the bench steps with the check on after
  # timing the step alone.
  ncu --clock-control none -k regex:square_sums --launch-count 1 \
    --section SpeedOfLight --section LaunchStats \
    "$bin" run --out /tmp/ncu-run --only 64M --optimizers AdamW --masters 24 \
    > "$out/ncu-grad-check-64M.txt" 2>&1
  grep -E "^    Duration|DRAM Throughput|Memory Throughput" "$out/ncu-grad-check-64M.txt" | sed "s/^/grad check: /"
fi
