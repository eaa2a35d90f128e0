#!/usr/bin/env bash
# Planned, not yet run (no device could be started at the end of the session that
# wrote it, then too little device time was left). One device command: the whole GPU
# suite of this build (device failures now returned as errors on the pinned-transfer
# and NCCL paths), `flashopt-bench run` on one small workload (the driver probe that
# replaced the panic hook must find the GPU), and the candle CUDA adapter's check
# (clipping and parameter groups through its Config).
# Binaries built on the CPU machine, stripped, carried in .dev/bin:
#   cargo test --release --features gpu-tests --test gpu --no-run    -> gpu-tests
#   cargo build --release -p flashopt-bench                          -> flashopt-bench
#   scripts/candle_cuda_build.sh target/candle-cuda --release        -> cuda_check
# (then tar cJf .dev/bins.tar.xz -C .dev bin, carried: the device takes 64 MiB)
set -uo pipefail
out=${1:?OUT}
exec > >(tee "$out/run.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
timeout 60 .dev/bin/flashopt-bench run --out /tmp/bench --only 4M --optimizers AdamW --masters 24 2>&1 | tail -3
echo "flashopt-bench rc=${PIPESTATUS[0]}"
if [ -x .dev/bin/cuda_check ]; then
  # candle links CUDA's libraries by soname (built against stubs): point those
  # sonames at the libraries the machine has (docs/CANDLE.md).
  libs=/tmp/cudalibs; mkdir -p $libs
  for n in libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10 libcudart.so.13; do
    f=$(find /opt /usr/local /usr/lib -name "$n*" 2>/dev/null | grep -v stubs | head -1)
    echo "$n -> ${f:-MISSING}"; [ -n "$f" ] && ln -sf "$f" $libs/$n
  done > $out/candle-libs.txt
  LD_LIBRARY_PATH=$libs timeout 90 .dev/bin/cuda_check 5 > $out/candle-cuda-check.log 2>&1
  echo "cuda_check rc=$?"; tail -4 $out/candle-cuda-check.log
fi
FLASHOPT_GPU_REPORT=$out/gpu.md timeout $((440 - SECONDS)) .dev/bin/gpu-tests --test-threads 1 > $out/gpu-tests.log 2>&1
echo "gpu-tests rc=$?"
grep -E "test result|FAILED|panicked" $out/gpu-tests.log
echo "== done at ${SECONDS}s"
