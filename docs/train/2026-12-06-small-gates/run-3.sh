#!/usr/bin/env bash
# Run 3 (one device command, one H100, warm after run 2): jobs-3.txt, all 9 at once, until
# 585 s. Binaries as in run-1.sh.
set -uo pipefail
out=${1:?OUT}
W=/tmp/small-gates-3
rm -rf $W && mkdir -p $W/logs
exec > >(tee "$W/run-3.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev
tar xzf .dev/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
echo "== jobs from ${SECONDS}s"
scripts/train_jobs.sh $W 9 $((585 - SECONDS)) docs/train/2026-12-06-small-gates/jobs-3.txt
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/run-3.tgz" -C $W .
