#!/usr/bin/env bash
# The second device command, one GPU, binaries rebuilt after the first (cuBLAS the
# default; the sharded rank's launch holding the matrix buffers): Muon sharded through
# NCCL, Muon's step and the matrix stage against the CPU (now on cuBLAS),
# flashopt-bench's Muon-24 on GPT-2 on the default stage, then, with the time left, the
# twin's torch.optim.Muon runs (docs/train/2026-12-08-muon-twin/run.sh).
set -uo pipefail
out=${1:?OUT}
budget=${2:-550}  # seconds; a third argument picks twin jobs (run.sh's PATTERN)
W=/tmp/muon-cublas-2
rm -rf $W && mkdir -p $W/bench
exec > >(tee "$W/run.log") 2>&1
archive() { tar czf "$out/muon-cublas-2.tgz" -C $W . ; }
tar xJf .dev/bins.tar.xz -C .dev
export LD_LIBRARY_PATH=$(scripts/cuda_libs.sh /tmp/cublas libcublas.so.13 libcublasLt.so.13 | tail -1)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
FLASHOPT_GPU_REPORT=$W/gpu-matrices.md timeout 120 .dev/bin/gpu-tests --test-threads 1 sharded_matrices muon_steps_close the_matrix_stage_follows > $W/gpu-matrices.log 2>&1
echo "gpu matrices rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-matrices.log | tail -20
cat $W/gpu-matrices.md
archive
only="GPT-2 124M"
timeout 90 .dev/bin/flashopt-bench run --out $W/bench --masters 24 --optimizers Muon --only "$only" > $W/bench.log 2>&1
echo "bench rc=$? at ${SECONDS}s"; grep -hE '^(Muon|AdamW)' $W/bench/flashopt.csv
grep -i "copy\|panick\|error\|cublas" $W/bench.log | head -5
archive
echo "== device part done at ${SECONDS}s"
bash docs/train/2026-12-08-muon-twin/run.sh "$out" $((budget - SECONDS)) "${3:-.}"
