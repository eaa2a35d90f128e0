#!/usr/bin/env bash
# Run 3 (one device command): the jobs of jobs-3.txt, all at once, until 450 s.
# Binaries built on the CPU machine and carried in .dev/bin, flashoptim 0.1.4's wheel
# unpacked in .dev/pylib.
set -uo pipefail
out=${1:?OUT}
W=/tmp/w3
mkdir -p $W/logs
exec > >(tee "$out/run-3.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
scripts/train_jobs.sh $W 5 $((450 - SECONDS)) docs/train/2026-12-05-gates/jobs-3.txt
cat $W/jobs.log
tar czf "$out/run-3.tgz" -C $W .
echo "== done at ${SECONDS}s"
