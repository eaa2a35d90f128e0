#!/usr/bin/env bash
# Device run D: candle's CUDA path (cuda_check), the GPU tests of the in-place and
# approximate paths, AdamW/Lion/SGD exact and approximate, ncu of approximate AdamW.
set -u
out=${OUT:?}
start=$(date +%s)
el() { echo $(( $(date +%s) - start )); }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv > $out/device.txt 2>&1
cat $out/device.txt
# candle links CUDA's libraries by soname (built here against stubs): point those
# sonames at the libraries the machine has.
libs=/tmp/cudalibs; mkdir -p $libs
for n in libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10 libcudart.so.13; do
  f=$(find /opt /usr/local /usr/lib -name "$n*" 2>/dev/null | grep -v stubs | head -1)
  echo "$n -> ${f:-MISSING}"; [ -n "$f" ] && ln -sf "$f" $libs/$n
done > $out/candle-libs.txt
cat $out/candle-libs.txt
xz -dc .dev/bin/cuda_check.xz > /tmp/cuda_check && chmod +x /tmp/cuda_check
LD_LIBRARY_PATH=$libs timeout 120 /tmp/cuda_check 5 > $out/candle-cuda-check.log 2>&1
echo "candle rc=$? at $(el) s"; tail -8 $out/candle-cuda-check.log
FLASHOPT_GPU_REPORT=$out/gpu.md timeout 100 .dev/bin/gpu-tests --test-threads 1 --skip gpt2_148 > $out/gpu-tests.log 2>&1
echo "gpu tests rc=$? at $(el) s"; grep -E "^test result|FAILED|panicked" $out/gpu-tests.log | head; grep -h "transfers" $out/gpu.md
timeout 100 .dev/bin/flashopt-bench run --out $out/adamw --only "4M,268M,GPT-2 124M" --masters 24 --optimizers AdamW --arithmetic exact,approximate > $out/adamw.log 2>&1
echo "adamw rc=$? at $(el) s"; grep -E "^AdamW|upload state" $out/adamw.log | sed -E 's/timing.*//' | cut -c1-220
if [ $(el) -lt 190 ]; then
  timeout 80 .dev/bin/flashopt-bench run --out $out/llama --only "Llama-3.1-8B x4 layers" --masters 24 --optimizers AdamW --arithmetic exact,approximate > $out/llama.log 2>&1
  echo "llama rc=$? at $(el) s"; grep -E "^AdamW|upload state" $out/llama.log | sed -E 's/timing.*//' | cut -c1-220
fi
timeout 70 .dev/bin/flashopt-bench run --out $out/lion-sgd --only 268M --masters 24 --optimizers Lion,SGD --arithmetic exact,approximate > $out/lion-sgd.log 2>&1
echo "lion/sgd rc=$? at $(el) s"; grep -E "^(Lion|SGD)" $out/lion-sgd.log
for a in approximate; do
  left=$(( 345 - $(el) )); [ $left -lt 35 ] && break
  timeout 45 ncu --clock-control none -k regex:flashopt --launch-skip 3 --launch-count 1 --section SpeedOfLight --section Occupancy --section LaunchStats \
    --metrics smsp__thread_inst_executed.sum,smsp__inst_executed.sum .dev/bin/flashopt-bench run --out /tmp/ncu-$a --only 64M --optimizers AdamW --masters 24 --arithmetic $a > $out/ncu-AdamW-24-$a-64M.txt 2>&1
  grep -E "smsp__inst_executed.sum|Registers Per|Achieved Occupancy|^    Duration|DRAM Throughput" $out/ncu-AdamW-24-$a-64M.txt | sed "s/^/$a: /"
done
cd $out && tar czf all.tgz --exclude=all.tgz . 2>/dev/null; echo "done at $(el) s"
