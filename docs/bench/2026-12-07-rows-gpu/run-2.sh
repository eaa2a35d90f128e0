#!/usr/bin/env bash
# The second device command (370 s of device time were left): jobs-2.txt, all six at
# once, alone on the GPU (the same binaries as run-1.sh, carried as .dev/rows.tar.xz;
# burn's autotune cache of the small configuration carried in). The archive is written
# when the jobs end or their deadline kills them.
set -uo pipefail
out=${1:?OUT}
D=docs/bench/2026-12-07-rows-gpu
W=/tmp/rows-2
rm -rf $W && mkdir -p $W/logs
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/rows.tar.xz -C .dev
tar xzf docs/train/2026-12-06-sgd-rate/run-3/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
scripts/train_jobs.sh $W 6 $((345 - SECONDS)) $D/jobs-2.txt
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/rows-2.tgz" -C $W .
