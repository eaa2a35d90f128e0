#!/usr/bin/env bash
# Run 4 (a later session, a fresh machine, the binaries of run 1): the jobs of
# jobs-4.txt, 5 at a time, none started with under 200 s left. Usage: run-4.sh OUT [SECONDS]
set -uo pipefail
out=${1:?OUT}
budget=${2:-585}  # seconds this script may take
W=/tmp/muon-run-4
rm -rf $W && mkdir -p $W/logs
exec > >(tee "$W/run.log") 2>&1
archive() { tar czf "$out/run-4.tgz" -C $W . ; }
[ -x .dev/bin/train ] || tar xJf .dev/bins.tar.xz -C .dev
[ -d target/autotune ] || tar xzf docs/train/2026-12-06-sgd-rate/run-3/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
MIN_SECONDS=200 scripts/train_jobs.sh $W 5 $((budget - SECONDS)) docs/train/2026-12-07-muon/jobs-4.txt
cat $W/jobs.log
grep -h "final validation\|panicked" $W/logs/*.log | head -30
echo "== done at ${SECONDS}s"
archive
