#!/usr/bin/env bash
# The twin's runs (jobs.txt), eight at a time on one GPU, each killed at the deadline
# (its CSV holds the steps it took). docs/bench/2026-12-07-muon-cublas/gpu-2.sh calls it.
# Usage on the GPU machine: run.sh OUT [SECONDS [PATTERN]] (PATTERN: only the jobs it
# matches, grep's)
set -uo pipefail
out=${1:?OUT}
budget=${2:-585}
pattern=${3:-.}
W=/tmp/muon-twin
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
archive() { tar czf "$out/muon-twin.tgz" -C $W . ; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import torch; print('torch', torch.__version__)"
grep -e "$pattern" docs/train/2026-12-08-muon-twin/jobs.txt > $W/jobs.txt
scripts/train_jobs.sh $W 8 $((budget - 30 - SECONDS)) $W/jobs.txt
cat $W/jobs.log
grep -h "final valid\|Error\|error" $W/job-*.out | head -30
echo "== done at ${SECONDS}s"
archive
