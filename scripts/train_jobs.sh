#!/usr/bin/env bash
# Runs the training jobs of a list side by side on one GPU machine, every job its own
# process, at most PARALLEL at a time, each killed at the deadline so that what
# finished comes back. Quality runs only: runs that share the device time each other,
# so their ms/step and memory figures are not the example's single-run figures.
#
# Usage on the GPU machine: scripts/train_jobs.sh WORK PARALLEL SECONDS JOBS
#   WORK      folder the jobs write into (`$W` in a job line)
#   JOBS      a file, one shell command per line (`#` lines and blank lines skipped),
#             run from the repository root; the first word of each is its name in
#             WORK/jobs.log
# Writes WORK/jobs.log: one line per job, its exit status and seconds. With MIN_SECONDS=N
# in the environment, a job is not started with fewer than N seconds left (it could not end).
set -uo pipefail
work=${1:?WORK} parallel=${2:?PARALLEL} seconds=${3:?SECONDS} jobs=${4:?JOBS}
mkdir -p "$work"
deadline=$(( $(date +%s) + seconds ))
export W=$work deadline min_left=${MIN_SECONDS:-1}
run_one() {
    local line=$1 start left rc
    start=$(date +%s)
    left=$(( deadline - start ))
    if (( left < min_left )); then echo "skipped (deadline): $line" >> "$W/jobs.log"; return; fi
    timeout --signal=KILL "$left" bash -c "$line" > "$W/job-$$-$start-$RANDOM.out" 2>&1
    rc=$?
    echo "rc=$rc s=$(( $(date +%s) - start )) $line" >> "$W/jobs.log"
}
export -f run_one
grep -v '^\s*\(#\|$\)' "$jobs" | tr '\n' '\0' | xargs -0 -P "$parallel" -I{} bash -c 'run_one "$1"' _ {}
