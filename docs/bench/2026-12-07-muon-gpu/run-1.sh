#!/usr/bin/env bash
# The first device command of the matrix stage (binaries built at the commit that adds
# it: `cargo test --release --features gpu-tests --test gpu --no-run` and
# `cargo build --release -p flashopt-bench`, stripped into .dev/muon/, carried as
# .dev/muon.tar.xz). Alone on the GPU: torch's Muon source as installed, the fixtures
# of tests/matrix_optimizers.rs (scripts/muon_fixtures.py), the GPU tests of the
# matrix stage and Muon, then flashopt-bench's Muon-24 and AdamW-24 on the workloads'
# matrices with the copy ceiling in the same process, and scripts/matrix_reference.py
# (torch.optim.Muon, torch's fused AdamW). The archive is written after every part.
set -uo pipefail
out=${1:?OUT}
W=/tmp/muon-1
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
archive() { tar czf "$out/muon-1.tgz" -C $W . ; }
tar xJf .dev/muon.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import inspect, torch; from torch.optim import _muon; print(torch.__version__); print(inspect.getsource(_muon._zeropower_via_newtonschulz)); print(inspect.getsource(_muon._adjust_lr)); print(inspect.getsource(_muon._single_tensor_muon))" > $W/torch-muon-source.txt 2>&1
echo "torch source rc=$?"; head -3 $W/torch-muon-source.txt
timeout 60 python3 scripts/muon_fixtures.py $W/torch.safetensors
echo "fixtures rc=$? at ${SECONDS}s"
archive
FLASHOPT_GPU_REPORT=$W/gpu-matrices.md timeout 200 .dev/muon/gpu-tests --test-threads 1 matrices > $W/gpu-matrices.log 2>&1
echo "gpu matrices rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-matrices.log | tail -20
cat $W/gpu-matrices.md
archive
only="GPT-2 124M,Llama-3.1-8B x4 layers,268M"
timeout 240 .dev/muon/flashopt-bench run --out $W/bench --masters 24 \
  --optimizers Muon,AdamW --only "$only" > $W/bench.log 2>&1
echo "bench rc=$? at ${SECONDS}s"; grep -hE '^(Muon|AdamW)' $W/bench/flashopt.csv
grep -i "copy\|panick\|error" $W/bench.log | head -5
archive
timeout 150 python3 scripts/matrix_reference.py $W/matrix_reference.csv "$only" > $W/matrix-reference.log 2>&1
echo "matrix reference rc=$? at ${SECONDS}s"; cat $W/matrix_reference.csv
archive
FLASHOPT_GPU_REPORT=$W/gpu-reductions.md timeout 100 .dev/muon/gpu-tests --test-threads 1 reductions > $W/gpu-reductions.log 2>&1
echo "gpu reductions rc=$? at ${SECONDS}s"
grep -E "test result|FAILED|panicked" $W/gpu-reductions.log | tail -5
echo "== done at ${SECONDS}s"
archive
