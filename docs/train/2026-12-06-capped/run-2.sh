#!/usr/bin/env bash
# Run 2 (one device command): jobs-2.txt, 6 at a time, until 200 s; flashoptim 0.1.4's
# wheel unpacked into .dev/pylib.
set -uo pipefail
out=${1:?OUT}
W=/tmp/capped-run-2
rm -rf $W && mkdir -p $W/logs
exec > >(tee "$W/run-2.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
scripts/train_jobs.sh $W 6 $((200 - SECONDS)) docs/train/2026-12-06-capped/jobs-2.txt
cat $W/jobs.log
grep -h "final valid" $W/logs/*.log
echo "== done at ${SECONDS}s"
tar czf "$out/run-2.tgz" -C $W .
