#!/usr/bin/env bash
# Run 4 (one device command): jobs-4.txt (seed 2026's fp32 AdamW and AdamW-24 with the f32
# and the bf16 loss, small configuration), 3 at a time until 200 s, with run 3's autotune
# cache carried in (.dev/autotune.tgz, = run-3/autotune.tgz): no kernel is tuned again.
set -uo pipefail
out=${1:?OUT}
W=/tmp/sgd-rate-run-4
rm -rf $W && mkdir -p $W/logs .dev/bin
exec > >(tee "$W/run-4.log") 2>&1
tar xJf .dev/train.tar.xz -C .dev/bin
tar xzf .dev/autotune.tgz && find target/autotune -type f
scripts/train_jobs.sh $W 3 $((200 - SECONDS)) docs/train/2026-12-06-sgd-rate/jobs-4.txt
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/run-4.tgz" -C $W .
