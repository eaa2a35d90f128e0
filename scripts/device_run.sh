#!/usr/bin/env bash
# One device run for the kernel: the GPU tests (bit-exact against the CPU reference),
# step times of this kernel and of a baseline build side by side, and ncu counters.
# Binaries are built on the development machine and carried in .dev/bin:
#
#   cargo test --release --features gpu-tests --test gpu --no-run  # -> .dev/bin/gpu-tests
#   cargo build --release -p flashopt-bench                         # -> .dev/bin/flashopt-bench
#   (optional) an older flashopt-bench as .dev/bin/flashopt-bench-baseline
#
# Usage on the GPU machine: scripts/device_run.sh OUT [tests|bench|all]
set -uo pipefail
out=${1:?OUT folder}
what=${2:-all}
mkdir -p "$out"
bin=.dev/bin
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/device.txt"
if [[ $what == tests || $what == all ]]; then
  FLASHOPT_GPU_REPORT="$out/gpu.md" "$bin/gpu-tests" --test-threads 1 2>&1 | tee "$out/gpu-tests.log"
fi
if [[ $what == bench || $what == all ]]; then
  sel=(--only 268M --optimizers AdamW,Lion,SGD --masters 24)
  for b in flashopt-bench flashopt-bench-baseline; do
    [[ -x $bin/$b ]] || continue
    "$bin/$b" run --out "$out/$b" "${sel[@]}" 2>&1 | tee "$out/$b.log"
  done
  if command -v ncu >/dev/null; then
    for b in flashopt-bench flashopt-bench-baseline; do
      [[ -x $bin/$b ]] || continue
      for o in AdamW Lion SGD; do
        ncu --clock-control none -k regex:flashopt --launch-skip 3 --launch-count 1 \
          --section SpeedOfLight --section Occupancy --section LaunchStats --section InstructionStats \
          --metrics smsp__thread_inst_executed.sum,smsp__inst_executed.sum \
          "$bin/$b" run --out /tmp/ncu-$b --only 64M --optimizers $o --masters 24 \
          > "$out/ncu-$b-$o-64M.txt" 2>&1
        grep -E "thread_inst_executed.sum|smsp__inst_executed.sum|Registers Per|Achieved Occupancy|^    Duration|Memory Throughput" "$out/ncu-$b-$o-64M.txt" | sed "s/^/$b $o: /"
      done
    done
  fi
fi
