#!/usr/bin/env bash
# ncu's counters of one fused step launch (the fourth) of a flashopt-bench build: AdamW-24
# on 64M elements. Instructions (divide the thread count by 67,108,864 for instructions per
# element), registers, SM and DRAM throughput, occupancy and the two stall latencies the
# step's benchmarks report.
#
# Usage on the GPU machine: scripts/ncu_step.sh FLASHOPT_BENCH OUT_DIR > LOG
set -uo pipefail
bench=${1:?FLASHOPT_BENCH} out=${2:?OUT_DIR}
metrics=smsp__thread_inst_executed.sum,smsp__inst_executed.sum,launch__registers_per_thread
metrics+=,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__warps_active.avg.pct_of_peak_sustained_active
metrics+=,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio
exec timeout 60 ncu --clock-control none -k regex:flashopt --launch-skip 3 --launch-count 1 \
    --metrics "$metrics" "$bench" run --out "$out" --only 64M --optimizers AdamW --masters 24
