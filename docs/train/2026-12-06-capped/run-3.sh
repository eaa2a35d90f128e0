#!/usr/bin/env bash
# Run 3 (one device command): jobs-3.txt, both at once, until 270 s. Binaries as run 1's.
set -uo pipefail
out=${1:?OUT}
W=/tmp/capped-run-3
rm -rf $W && mkdir -p $W/logs .dev/bin
exec > >(tee "$W/run-3.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev/bin
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
scripts/train_jobs.sh $W 2 $((270 - SECONDS)) docs/train/2026-12-06-capped/jobs-3.txt
cat $W/jobs.log
grep -h "final validation\|FAILED\|passed" $W/small/*/summary.md 2>/dev/null
echo "== done at ${SECONDS}s"
tar czf "$out/run-3.tgz" -C $W .
