#!/usr/bin/env bash
# Run 1 (one device command): the step time of Lion-24 and SGD-24 with dithered momentum
# codes against the same rules rounding to nearest (flashopt-bench, 268M and GPT-2 124M,
# alternated twice, alone on the GPU, the copy ceiling in the same runs); ncu's
# instructions per element for Lion both ways on 64M; then jobs-1.txt, 5 at a time, until 585 s.
# Binaries built on the CPU machine from this commit, stripped, carried as .dev/bins.tar.xz.
set -uo pipefail
out=${1:?OUT}
W=/tmp/w1
mkdir -p $W/logs $W/bench .dev/bin
exec > >(tee "$W/run-1.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev/bin
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
for round in 1 2; do
  for opt in Lion Lion-flashoptim SGD SGD-flashoptim; do
    timeout 60 .dev/bin/flashopt-bench run --out $W/bench/$opt-$round --masters 24 --optimizers $opt \
      --only "268M,GPT-2 124M" > $W/bench/$opt-$round.log 2>&1
    echo "$opt round $round rc=$?"
  done
done
for opt in Lion Lion-flashoptim; do
  timeout 40 ncu --clock-control none -k regex:flashopt --launch-skip 3 --launch-count 1 \
    --metrics smsp__thread_inst_executed.sum,smsp__inst_executed.sum,launch__registers_per_thread,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed \
    .dev/bin/flashopt-bench run --out /tmp/ncu-$opt --only 64M --optimizers $opt --masters 24 > $W/bench/ncu-$opt.log 2>&1
  echo "ncu $opt rc=$?"
done
echo "== jobs from ${SECONDS}s"
scripts/train_jobs.sh $W 5 $((585 - SECONDS)) docs/train/2026-12-06-dithered/run-1/jobs-1.txt
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/run-1.tgz" -C $W .
