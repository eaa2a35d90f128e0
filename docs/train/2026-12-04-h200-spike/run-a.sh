#!/usr/bin/env bash
# Run A (one device command, one H200): the loss spike of AdamW-24 on the 353M GPT,
# captured and replayed. Binary: `cargo build --release --example train`, stripped
# into .dev/bin/train; flashoptim 0.1.4 unpacked into .dev/pylib.
#   1. the two spiking runs of docs/TRAINING.md (bf16 compute with the bf16 loss, and
#      f32 compute), stopped after 45 steps, counting `state_health` after every step
#      and capturing the optimizer's inputs and outputs at step 27 (the update the
#      spike at step 28 sees) and step 40 (f32: before the 472 at step 41);
#   2. each capture replayed on flashopt's CPU reference (the GPU's result against
#      it, and the elements whose step exceeds exact Adam's largest);
#   3. each capture stepped by flashoptim 0.1.4's own AdamW kernel.
#   4. the shipped AdamW-24 with the example's new f32 loss, 200 steps.
set -uo pipefail
out=${1:?OUT}
log=$out/run-a.log
exec > >(tee "$log") 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
t=.dev/bin/train
mkdir -p /tmp/cap-bf16 /tmp/cap-f32 $out/runs
$t --backend cuda --config gpt350m --runs flashopt-bf16 --bf16-loss --stop-after 45 \
  --capture /tmp/cap-bf16 --capture-steps 27 --health-every 1 --out /tmp/diag-bf16 | grep -v "^\s*$" | tail -5
$t --backend cuda --config gpt350m --runs flashopt --stop-after 45 \
  --capture /tmp/cap-f32 --capture-steps 27,40 --health-every 1 --out /tmp/diag-f32 | grep -v "^\s*$" | tail -5
for d in bf16 f32; do echo "== health $d"; cat /tmp/diag-$d/health-*.csv; done
PYTHONPATH=.dev/pylib python3 scripts/flashoptim_replay.py /tmp/cap-bf16 27
PYTHONPATH=.dev/pylib python3 scripts/flashoptim_replay.py /tmp/cap-f32 27 40
$t --replay /tmp/cap-bf16
$t --replay /tmp/cap-f32
mkdir -p /tmp/a && cp /tmp/cap-*/*.md /tmp/a/ 2>/dev/null
for d in bf16 f32; do cp /tmp/cap-$d/flashoptim-step-27.md /tmp/a/flashoptim-$d-27.md; cp /tmp/cap-$d/replay-step-27.md /tmp/a/replay-$d-27.md; cp /tmp/diag-$d/health-*.csv /tmp/a/health-$d.csv; done
cp /tmp/cap-f32/flashoptim-step-40.md /tmp/a/flashoptim-f32-40.md; cp /tmp/cap-f32/replay-step-40.md /tmp/a/replay-f32-40.md
tar czf $out/run-a.tgz -C /tmp a
$t --backend cuda --config gpt350m --runs flashopt-bf16 --out $out/runs | grep -v "^\s*$" | tail -4
tar czf $out/run-a.tgz -C /tmp a -C $out runs
