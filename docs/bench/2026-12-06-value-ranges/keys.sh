#!/usr/bin/env bash
# One device command: the per-launch host cost, before and after the fused kernel's
# cache key is hashed once (and the kernel cloned as one shared allocation):
# flashopt-bench of e3e0d5b ("old"), of 9ee1294 ("new"), and of 9ee1294 with tensors
# of 2^19 groups (16M elements) or more launching alone instead of 2^16 ("alone19": an
# experiment, built with that one constant changed), AdamW-24 on
# GPT-2 124M (148 tensors; the in-place step there is host-bound), in turn, twice. The in-place lines
# give each step's time and the host's time before the sync.
# Binaries in .dev/keys.tar.xz (`cargo build --release -p flashopt-bench`, stripped).
set -uo pipefail
out=${1:?OUT}
W=/tmp/keys
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/keys.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
for round in 1 2; do
  for b in old new alone19; do
    timeout 60 .dev/keys/flashopt-bench-$b run --out $W/$b-$round --masters 24 --optimizers AdamW \
      --only "GPT-2 124M" > $W/$b-$round.log 2>&1
    echo "$b round $round rc=$?"; grep -h '^AdamW' $W/$b-$round/flashopt.csv
    grep -o "gradients read in place.*" $W/$b-$round.log
  done
done
echo "== done at ${SECONDS}s"
tar czf "$out/keys.tgz" -C $W .
