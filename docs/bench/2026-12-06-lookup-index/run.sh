#!/usr/bin/env bash
# One device command: the code-table lookups indexed with a small unsigned place, the
# unit index from X alone and the batched in-place gradient check (build "batched")
# beside main (host scalars as vectors) and c5d5dec (the build before the runtime
# refactor), AdamW-24 on 268M, GPT-2 124M and Llama-3.1-8B x4, the three builds in turn,
# twice, each alone on the GPU (the flat step, and the bench's line on gradients read in
# place with and without the device gradient check); ncu of the three on 64M; then the
# PyTorch twin at SGD's shipped rate (docs/train/2026-12-06-sgd-twin/jobs.txt, eight at
# a time) once the GPU is free.
# Binaries in .dev/next.tar.xz (each `cargo build --release -p flashopt-bench`, stripped):
#   next/flashopt-bench-c5d5dec   (a fresh git worktree of c5d5dec)
#   next/flashopt-bench-main      (b57c3a8: host scalars as vectors)
#   next/flashopt-bench-batched   (41f8e41: + lookups, unit index, batched check)
# flashoptim 0.1.4 unpacked into .dev/pylib (carried as .dev/pylib.tgz).
set -uo pipefail
out=${1:?OUT}  # LIMIT=seconds in the environment: when the twin jobs must end (default 570)
W=/tmp/lookup-index
rm -rf $W && mkdir -p $W/logs
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/next.tar.xz -C .dev
tar xzf .dev/pylib.tgz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
builds="c5d5dec main batched"
for round in 1 2; do
  for b in $builds; do
    timeout 120 .dev/next/flashopt-bench-$b run --out $W/$b-$round --masters 24 --optimizers AdamW \
      --only "268M,GPT-2 124M,Llama-3.1-8B x4 layers" > $W/$b-$round.log 2>&1
    echo "$b round $round rc=$?"; grep -h '^AdamW' $W/$b-$round/flashopt.csv
    grep -o "gradients read in place.*" $W/$b-$round.log
  done
done
for b in $builds; do
  scripts/ncu_step.sh .dev/next/flashopt-bench-$b $W/ncu-$b > $W/ncu-$b.log 2>&1
  echo "ncu $b rc=$?"
done
echo "== twin from ${SECONDS}s"
scripts/train_jobs.sh $W 8 $((${LIMIT:-570} - SECONDS)) docs/train/2026-12-06-sgd-twin/jobs.txt
cat $W/jobs.log
grep -h "final valid" $W/logs/*.log
echo "== done at ${SECONDS}s"
tar czf "$out/lookup-index.tgz" -C $W .
