#!/usr/bin/env bash
# Run 1 (one device command, one GPU): the matrix stage's and Muon's GPU tests alone,
# flashopt-bench's Muon-24 alone beside torch.optim.Muon (scripts/matrix_reference.py),
# then, if Muon's GPU test passed, the gpt350m training jobs (jobs-gpt350m.txt, 4 at a
# time, none started with under 100 s left).
# Binaries built on the CPU machine, stripped, carried as .dev/bins.tar.xz:
#   cargo test --release --features gpu-tests --test gpu --no-run    -> gpu-tests
#   cargo build --release -p flashopt-bench                          -> flashopt-bench
#   cargo build --release --example train                            -> train
set -uo pipefail
out=${1:?OUT}
W=/tmp/muon-run-1
rm -rf $W && mkdir -p $W/logs $W/bench
exec > >(tee "$W/run.log") 2>&1
archive() { tar czf "$out/run-1.tgz" -C $W . ; }
tar xJf .dev/bins.tar.xz -C .dev
tar xzf docs/train/2026-12-06-sgd-rate/run-3/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
FLASHOPT_GPU_REPORT=$W/gpu-matrices.md timeout 170 .dev/bin/gpu-tests --test-threads 1 matrices > $W/gpu-matrices.log 2>&1
echo "gpu matrices rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-matrices.log | tail -20
cat $W/gpu-matrices.md
archive
only="GPT-2 124M,268M,Llama-3.1-8B x4 layers"
timeout 90 .dev/bin/flashopt-bench run --out $W/bench --masters 24 --optimizers Muon --only "$only" > $W/bench.log 2>&1
echo "bench rc=$? at ${SECONDS}s"; grep -hE '^(Muon|AdamW)' $W/bench/flashopt.csv
grep -i "copy\|panick\|error" $W/bench.log | head -5
archive
timeout 150 python3 scripts/matrix_reference.py $W/matrix_reference.csv "$only" > $W/matrix-reference.log 2>&1
echo "matrix reference rc=$? at ${SECONDS}s"; cat $W/matrix_reference.csv
archive
if grep -q "muon_steps_close_to_the_cpu ... ok" $W/gpu-matrices.log; then
  MIN_SECONDS=100 scripts/train_jobs.sh $W 4 $((580 - SECONDS)) docs/train/2026-12-07-muon/jobs-gpt350m.txt
  cat $W/jobs.log
  grep -h "final validation\|panicked" $W/logs/*.log | head -20
else
  echo "Muon's GPU test did not pass: no training"
fi
echo "== done at ${SECONDS}s"
archive
