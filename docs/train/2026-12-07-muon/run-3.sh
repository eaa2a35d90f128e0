#!/usr/bin/env bash
# Run 3 (one device command, the machine of runs 1-2 still warm): the training jobs of
# jobs-3.txt, 10 at a time, none started with under 200 s left. Same binaries as run 1.
set -uo pipefail
out=${1:?OUT}
W=/tmp/muon-run-3
rm -rf $W && mkdir -p $W/logs
exec > >(tee "$W/run.log") 2>&1
archive() { tar czf "$out/run-3.tgz" -C $W . ; }
[ -x .dev/bin/train ] || tar xJf .dev/bins.tar.xz -C .dev
[ -d target/autotune ] || tar xzf docs/train/2026-12-06-sgd-rate/run-3/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
MIN_SECONDS=200 scripts/train_jobs.sh $W 10 $((585 - SECONDS)) docs/train/2026-12-07-muon/jobs-3.txt
cat $W/jobs.log
grep -h "final validation\|panicked" $W/logs/*.log | head -30
echo "== done at ${SECONDS}s"
archive
