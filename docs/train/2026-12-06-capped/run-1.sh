#!/usr/bin/env bash
# Run 1 (one device command): the step time of Lion-24 and SGD-24 with the capped dither
# against the same rules rounding to nearest (flashopt-bench, 268M and GPT-2 124M, alone on
# the GPU, the copy ceiling in the same runs) and ncu's instructions per element for Lion
# on 64M; then jobs-1.txt (with the candle CUDA adapter's check), 6 at a time, until 580 s. Binaries built on the CPU machine
# from this commit, stripped, carried as .dev/bins.tar.xz; flashoptim 0.1.4's wheel
# unpacked into .dev/pylib for the twin.
set -uo pipefail
out=${1:?OUT}
W=/tmp/w1
mkdir -p $W/logs $W/bench .dev/bin
exec > >(tee "$W/run-1.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev/bin
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
for opt in Lion Lion-flashoptim SGD SGD-flashoptim; do
  timeout 60 .dev/bin/flashopt-bench run --out $W/bench/$opt --masters 24 --optimizers $opt \
    --only "268M,GPT-2 124M" > $W/bench/$opt.log 2>&1
  echo "$opt rc=$?"
done
timeout 40 ncu --clock-control none -k regex:flashopt --launch-skip 3 --launch-count 1 \
  --metrics smsp__thread_inst_executed.sum,smsp__inst_executed.sum,launch__registers_per_thread,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed \
  .dev/bin/flashopt-bench run --out /tmp/ncu-Lion --only 64M --optimizers Lion --masters 24 > $W/bench/ncu-Lion.log 2>&1
echo "ncu Lion rc=$?"
# candle links CUDA's libraries by soname (built against stubs, docs/CANDLE.md): point
# those sonames at the machine's libraries for the candle adapter's check (a job).
mkdir -p /tmp/cudalibs
for n in libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10 libcudart.so.13; do
  f=$(find /opt /usr/local /usr/lib -name "$n*" 2>/dev/null | grep -v stubs | head -1)
  echo "$n -> ${f:-MISSING}"; [ -n "$f" ] && ln -sf "$f" /tmp/cudalibs/$n
done > $W/logs/candle-libs.txt
echo "== jobs from ${SECONDS}s"
scripts/train_jobs.sh $W 6 $((580 - SECONDS)) docs/train/2026-12-06-capped/jobs-1.txt
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/run-1.tgz" -C $W .
