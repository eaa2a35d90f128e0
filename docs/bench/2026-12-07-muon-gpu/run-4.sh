#!/usr/bin/env bash
# After the fix of a matrix result's uniformity (binaries built as for run-1.sh,
# .dev/muon.tar.xz): the GPU tests of the matrix stage and of Muon against the CPU.
set -uo pipefail
out=${1:?OUT}
W=/tmp/muon-4
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/muon.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version --format=csv
FLASHOPT_GPU_REPORT=$W/gpu-matrices.md timeout 120 .dev/muon/gpu-tests --test-threads 1 \
  matrices::muon_steps_close_to_the_cpu matrices::the_matrix_stage_follows > $W/gpu-matrices.log 2>&1
echo "gpu matrices rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-matrices.log | tail -10
cat $W/gpu-matrices.md
tar czf "$out/muon-4.tgz" -C $W .
