#!/usr/bin/env bash
# The second device command (binaries built as for run-1.sh after the bench's slow-call
# schedule, smaller CPU-reference shapes in the GPU tests, the GEMM routine choice and
# the matrix buffers held during a step only, carried as .dev/muon.tar.xz): the torch
# fixtures, the GPU tests of the matrix stage
# (cosines, Muon's momentum bit for bit, the stage's times per cubek-matmul routine),
# then flashopt-bench's Muon-24 on the workloads' matrices. torch's references were
# measured by run-1.sh (on an H100).
set -uo pipefail
out=${1:?OUT}
W=/tmp/muon-2
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
archive() { tar czf "$out/muon-2.tgz" -C $W . ; }
tar xJf .dev/muon.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
timeout 45 python3 scripts/muon_fixtures.py $W/torch.safetensors
echo "fixtures rc=$? at ${SECONDS}s"
archive
FLASHOPT_GPU_REPORT=$W/gpu-matrices.md timeout 230 .dev/muon/gpu-tests --test-threads 1 matrices > $W/gpu-matrices.log 2>&1
echo "gpu matrices rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-matrices.log | tail -20
cat $W/gpu-matrices.md
archive
only="GPT-2 124M,Llama-3.1-8B x4 layers,268M"
timeout 200 .dev/muon/flashopt-bench run --out $W/bench --masters 24 \
  --optimizers Muon --only "$only" > $W/bench.log 2>&1
echo "bench rc=$? at ${SECONDS}s"; grep -hE '^(Muon|AdamW)' $W/bench/flashopt.csv
grep -i "copy\|panick\|error" $W/bench.log | head -5
echo "== done at ${SECONDS}s"
archive
