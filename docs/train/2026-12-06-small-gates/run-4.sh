#!/usr/bin/env bash
# Run 4 (one device command, one H100, warm after run 3): jobs-4.txt, all 6 at once, until
# 375 s (the session's device time left). Binaries as in run-1.sh.
set -uo pipefail
out=${1:?OUT}
W=/tmp/small-gates-4
rm -rf $W && mkdir -p $W/logs
exec > >(tee "$W/run-4.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev
tar xzf .dev/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
echo "== jobs from ${SECONDS}s"
scripts/train_jobs.sh $W 6 $((375 - SECONDS)) docs/train/2026-12-06-small-gates/jobs-4.txt
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/run-4.tgz" -C $W .
