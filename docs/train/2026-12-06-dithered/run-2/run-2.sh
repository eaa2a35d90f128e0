#!/usr/bin/env bash
# Run 2 (one device command): jobs-2.txt, 6 at a time, until 540 s. Binaries built on
# the CPU machine from this commit, stripped, carried as .dev/bins.tar.xz.
set -uo pipefail
out=${1:?OUT}
W=/tmp/w2
mkdir -p $W/logs .dev/bin
exec > >(tee "$W/run-2.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev/bin
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
scripts/train_jobs.sh $W 6 $((540 - SECONDS)) docs/train/2026-12-06-dithered/run-2/jobs-2.txt
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/run-2.tgz" -C $W .
