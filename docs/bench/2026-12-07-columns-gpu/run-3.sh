#!/usr/bin/env bash
# The third device command (run right after run-2.sh on the same warm machine, the same
# binaries; given inline to the device, this file holds it as it ran): flashopt-bench's
# Lamb-24, CautiousAdamW-24 and AdamW-24 with the copy ceiling in the same process, and
# scripts/reducing_reference.py (LAMB and Cautious AdamW from their papers, torch's fused
# AdamW), alone on the GPU.
W=/tmp/cols-3; mkdir -p $W; tar xJf .dev/cols.tar.xz -C .dev; only="268M,GPT-2 124M,Llama-3.1-8B x4 layers"; timeout 130 .dev/cols/flashopt-bench run --out $W/bench --masters 24 --optimizers Lamb,CautiousAdamW,AdamW --only "$only" > $W/bench.log 2>&1; echo "bench rc=$? at ${SECONDS}s"; cat $W/bench/flashopt.csv; grep -i "copy" $W/bench.log; timeout 90 python3 scripts/reducing_reference.py $W/reducing_reference.csv "$only" > $W/reference.log 2>&1; echo "ref rc=$? at ${SECONDS}s"; cat $W/reducing_reference.csv; tar czf $OUT/cols-3.tgz -C $W .
