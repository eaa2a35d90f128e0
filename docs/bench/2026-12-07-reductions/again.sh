#!/usr/bin/env bash
# The second device command, after the reduction kernels' fix (a comptime loop in
# their shared-memory tree): the GPU tests of the reducing optimizers, then
# flashopt-bench's Lamb-24, CautiousAdamW-24 and AdamW-24 (copy ceiling in the same
# process), then scripts/reducing_reference.py on the same GPU; 268M and GPT-2 only
# (the device time left that day). Binaries as all.sh
# builds them, in .dev/reductions.tar.xz.
set -uo pipefail
out=${1:?OUT}
W=/tmp/reductions-again
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/reductions.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
FLASHOPT_GPU_REPORT=$W/gpu-reductions.md timeout 90 .dev/reductions/gpu-tests --test-threads 1 reductions > $W/gpu-reductions.log 2>&1
echo "gpu reductions rc=$? at ${SECONDS}s"
grep -E "^\| |^test |test result|FAILED|panicked" $W/gpu-reductions.log | tail -20
only="268M,GPT-2 124M"
timeout 120 .dev/reductions/flashopt-bench run --out $W/bench --masters 24 --optimizers Lamb,CautiousAdamW,AdamW \
  --only "$only" > $W/bench.log 2>&1
echo "bench rc=$? at ${SECONDS}s"; grep -hE '^(Lamb|Cautious|AdamW)' $W/bench/flashopt.csv; grep -i "copy\|panick" $W/bench.log | head -3
timeout 80 python3 scripts/reducing_reference.py $W/reducing_reference.csv "$only" > $W/reference.log 2>&1
echo "reference rc=$? at ${SECONDS}s"; cat $W/reducing_reference.csv
tar czf "$out/reductions-again.tgz" -C $W .
