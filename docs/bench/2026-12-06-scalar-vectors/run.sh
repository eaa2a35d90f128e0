#!/usr/bin/env bash
# The host scalars read as 16-byte vectors (four scalars a load) against c7fa937 (one
# load each), AdamW-24 on 268M, GPT-2 124M and Llama-3.1-8B x4 layers, the two builds
# in turn, twice, each alone on the GPU; then ncu's counters of both on 64M.
# Binaries: .dev/bin/flashopt-bench (c7fa937, from .dev/bins.tar.xz) and
# .dev/vec/flashopt-bench (this change), each `cargo build --release -p flashopt-bench`
# on the CPU machine, stripped.
set -uo pipefail
out=${1:?OUT}
W=/tmp/scalar-vectors
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev
tar xJf .dev/vec.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
for round in 1 2; do
  for b in before:.dev/bin/flashopt-bench after:.dev/vec/flashopt-bench; do
    name=${b%%:*}; bin=${b#*:}
    timeout 150 $bin run --out $W/$name-$round --masters 24 --optimizers AdamW \
      --only "268M,GPT-2 124M,Llama-3.1-8B x4 layers" > $W/$name-$round.log 2>&1
    echo "$name round $round rc=$?"; grep -h '^AdamW' $W/$name-$round/flashopt.csv
  done
done
for b in before:.dev/bin/flashopt-bench after:.dev/vec/flashopt-bench; do
  name=${b%%:*}; bin=${b#*:}
  timeout 60 ncu --clock-control none -k regex:flashopt --launch-skip 3 --launch-count 1 \
    --metrics smsp__thread_inst_executed.sum,smsp__inst_executed.sum,launch__registers_per_thread,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio \
    $bin run --out $W/ncu-$name --only 64M --optimizers AdamW --masters 24 > $W/ncu-$name.log 2>&1
  echo "ncu $name rc=$?"
done
echo "== done at ${SECONDS}s"
tar czf "$out/scalar-vectors.tgz" -C $W .
