#!/usr/bin/env bash
# run-2.sh cut to the device time left (the same binaries, .dev/muon.tar.xz): the
# torch fixtures, the GPU tests of the matrix stage, and flashopt-bench's Muon-24 on
# GPT-2's matrices only.
set -uo pipefail
out=${1:?OUT}
W=/tmp/muon-3
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
archive() { tar czf "$out/muon-3.tgz" -C $W . ; }
tar xJf .dev/muon.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
timeout 40 python3 scripts/muon_fixtures.py $W/torch.safetensors
echo "fixtures rc=$? at ${SECONDS}s"
archive
FLASHOPT_GPU_REPORT=$W/gpu-matrices.md timeout 190 .dev/muon/gpu-tests --test-threads 1 matrices > $W/gpu-matrices.log 2>&1
echo "gpu matrices rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-matrices.log | tail -20
cat $W/gpu-matrices.md
archive
timeout 70 .dev/muon/flashopt-bench run --out $W/bench --masters 24 \
  --optimizers Muon --only "GPT-2 124M" > $W/bench.log 2>&1
echo "bench rc=$? at ${SECONDS}s"; grep -hE '^(Muon|AdamW)' $W/bench/flashopt.csv
grep -i "copy\|panick\|error" $W/bench.log | head -5
echo "== done at ${SECONDS}s"
archive
