#!/usr/bin/env bash
# One device command, one GPU: the matrix stage's and Muon's GPU tests (the stage on
# cuBLAS and on cubek-matmul's routines, Muon's step on the default, Muon sharded
# through NCCL on every visible GPU: `matrices` matches both modules), flashopt-bench's
# Muon-24 alone with the stage on cubek-matmul (the default) and on cuBLAS, beside
# torch.optim.Muon (scripts/matrix_reference.py), then, with the time left, the
# training jobs of docs/train/2026-12-07-muon/run-4.sh (the earlier train binary);
# between them, scripts/gpt_twin.py's Muon on the tiny config (a smoke test).
# Binaries built on the CPU machine, stripped, carried as .dev/bins.tar.xz:
#   cargo test --release --features gpu-tests --test gpu --no-run    -> gpu-tests
#   cargo build --release -p flashopt-bench                          -> flashopt-bench
# cuBLAS: the machine's libcublas.so.13 (torch's wheel's), linked alone into a folder
# on LD_LIBRARY_PATH.
set -uo pipefail
out=${1:?OUT}
W=/tmp/muon-cublas
rm -rf $W && mkdir -p $W/bench-cubek $W/bench-cublas
exec > >(tee "$W/run.log") 2>&1
archive() { tar czf "$out/muon-cublas.tgz" -C $W . ; }
tar xJf .dev/bins.tar.xz -C .dev
export LD_LIBRARY_PATH=$(scripts/cuda_libs.sh /tmp/cublas libcublas.so.13 libcublasLt.so.13 | tail -1)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
FLASHOPT_GPU_REPORT=$W/gpu-matrices.md timeout 170 .dev/bin/gpu-tests --test-threads 1 matrices > $W/gpu-matrices.log 2>&1
echo "gpu matrices rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-matrices.log | tail -20
cat $W/gpu-matrices.md
archive
only="GPT-2 124M,268M,Llama-3.1-8B x4 layers"
for gemm in cubek cublas; do
  # As run, cubek was the default and this line gave cubek no flag; cuBLAS is now.
  flag=(--matrix-gemm tma_or_ordered); [ $gemm = cublas ] && flag=(--matrix-gemm cublas)
  timeout 90 .dev/bin/flashopt-bench run --out $W/bench-$gemm --masters 24 --optimizers Muon --only "$only" "${flag[@]}" > $W/bench-$gemm.log 2>&1
  echo "bench $gemm rc=$? at ${SECONDS}s"; grep -hE '^(Muon|AdamW)' $W/bench-$gemm/flashopt.csv
  grep -i "copy\|panick\|error\|cublas" $W/bench-$gemm.log | head -5
done
archive
timeout 150 python3 scripts/matrix_reference.py $W/matrix_reference.csv "$only" > $W/matrix-reference.log 2>&1
echo "matrix reference rc=$? at ${SECONDS}s"; cat $W/matrix_reference.csv
timeout 60 python3 scripts/gpt_twin.py --config tiny --rule muon --opt torch-fp32 --layout torch --out $W/twin-smoke > $W/twin-smoke.log 2>&1
echo "twin smoke rc=$?"; tail -2 $W/twin-smoke.log
archive
echo "== timing done at ${SECONDS}s"
left=$((590 - SECONDS))
if (( left > 260 )); then bash docs/train/2026-12-07-muon/run-4.sh "$out" $left; fi
