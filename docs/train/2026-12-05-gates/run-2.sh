#!/usr/bin/env bash
# Run 2 (one device command): the jobs of jobs-2.txt, 4 at a time, until 570 s.
# Binaries built on the CPU machine and carried in .dev/bin, flashoptim 0.1.4's wheel
# unpacked in .dev/pylib.
set -uo pipefail
out=${1:?OUT}
W=/tmp/w2
mkdir -p $W/logs
exec > >(tee "$out/run-2.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
scripts/train_jobs.sh $W 4 $((570 - SECONDS)) docs/train/2026-12-05-gates/jobs-2.txt
cat $W/jobs.log
tar czf "$out/run-2.tgz" -C $W .
echo "== done at ${SECONDS}s"
