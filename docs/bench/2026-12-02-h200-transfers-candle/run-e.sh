#!/usr/bin/env bash
# Device run E: downloads straight into the tensors: candle check, GPU tests, AdamW-24 exact setup lines.
set -u
out=${OUT:?}
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv > $out/device.txt 2>&1
libs=/tmp/cudalibs; mkdir -p $libs
for n in libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10 libcudart.so.13; do
  f=$(find /opt /usr/local /usr/lib -name "$n*" 2>/dev/null | grep -v stubs | head -1)
  echo "$n -> ${f:-MISSING}"; [ -n "$f" ] && ln -sf "$f" $libs/$n
done > $out/candle-libs.txt
xz -dc .dev/bin/cuda_check.xz > /tmp/cuda_check && chmod +x /tmp/cuda_check
LD_LIBRARY_PATH=$libs timeout 60 /tmp/cuda_check 5 > $out/candle-cuda-check.log 2>&1
echo "candle rc=$? at $(el) s"; tail -2 $out/candle-cuda-check.log
FLASHOPT_GPU_REPORT=$out/gpu.md timeout 90 .dev/bin/gpu-tests --test-threads 1 --skip gpt2_148 > $out/gpu-tests.log 2>&1
echo "gpu tests rc=$? at $(el) s"; grep -E "^test result|FAILED|panicked" $out/gpu-tests.log | head; grep -h "transfers" $out/gpu.md
timeout 100 .dev/bin/flashopt-bench run --out $out/bench --only "268M,GPT-2 124M,Llama-3.1-8B x4 layers" --masters 24 --optimizers AdamW > $out/bench.log 2>&1
echo "bench rc=$? at $(el) s"; grep -E "^AdamW|upload state" $out/bench.log | sed -E 's/timing.*//' | cut -c1-240
cd $out && tar czf all.tgz --exclude=all.tgz . 2>/dev/null; echo "done at $(el) s"
