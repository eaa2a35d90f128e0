#!/usr/bin/env bash
# The GPU tests of the build that reads host scalars as vectors (every kernel's scalar
# layout changed): `cargo test --release --features gpu-tests --test gpu --no-run`,
# stripped to .dev/vec/gpu-tests.
set -uo pipefail
out=${1:?OUT}
W=/tmp/scalar-vectors-tests
rm -rf $W && mkdir -p $W
tar xJf .dev/vec.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
FLASHOPT_GPU_REPORT=$W/gpu.md timeout 560 .dev/vec/gpu-tests --test-threads 1 > $W/gpu-tests.log 2>&1
echo "gpu-tests rc=$?"
grep -E "test result|FAILED|panicked" $W/gpu-tests.log | head
cp $W/gpu-tests.log $W/gpu.md "$out/"
