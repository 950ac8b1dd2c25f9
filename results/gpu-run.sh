#!/usr/bin/env bash
# The device check run on a lent GPU (data in gpu/data, weights as an fp16 copy in gpu/weights).
# Usage there: bash results/gpu-run.sh SECONDS [PROFILE]
#   1. the AdamW step benchmark (issue 4), once per machine;
#   2. run_all.sh's best pipeline first (mt-cross, mt-cross-st, two more seeds of it, an STS
#      specialist and their ensemble), then the siamese one (mt-round-robin, mt-st), then every
#      other stage in run_all.sh's order (issues 6, 8);
#      --keep-going, so a failed check does not stop the training stages after it.
# Everything stops after SECONDS, so the logs still reach $OUT; a second call on the same
# warm machine goes on where this one stopped (run_all.sh skips completed stages).
set -u -o pipefail  # pipefail: a failed benchmark is not marked done by tee's success
export PYTHONUNBUFFERED=1 MINIBERT_DATA=${MINIBERT_DATA:-gpu/data}
export MINIBERT_WEIGHTS=${MINIBERT_WEIGHTS:-gpu/weights/all-MiniLM-L6-v2}
BUDGET=${1:?seconds}; PROFILE=${2:-full}; OUT=${OUT:-/tmp/out}; RUNS=runs; DEV=cuda
[ "$PROFILE" = quick ] && DEV=cpu   # quick: a dry run of this script on a CPU
mkdir -p "$OUT" "$RUNS/.done"
left() { echo $((BUDGET - SECONDS)); }
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader 2>/dev/null
  python3 -c "import torch; print('torch', torch.__version__)"; } | tee "$OUT/device.txt"
if [ ! -f "$RUNS/.done/bench-optim" ]; then
  timeout "$(left)" python3 -m minibert bench-optim --device $DEV --steps 50 \
    --json "$OUT/bench-optim.json" 2>&1 | tee "$OUT/bench-optim.txt" && touch "$RUNS/.done/bench-optim"
fi
for s in mt-cross mt-cross-st mt-cross-seed1 mt-cross-seed1-st mt-cross-seed2 mt-cross-seed2-st sts-cross ensemble-seeds \
         mt-round-robin mt-st ""; do
  [ "$(left)" -gt 5 ] || break
  timeout "$(left)" bash run_all.sh --profile "$PROFILE" ${s:+--only $s} --keep-going > "$OUT/run_all-${s:-rest}.log" 2>&1
  echo "run_all ${s:-rest}: rc=$? at ${SECONDS} s"
  grep -E '^-- .*: ok in|FAILED' "$OUT/run_all-${s:-rest}.log"
done
# one archive: the device tool returns only a few files from $OUT
tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='step-*' \
  --exclude='best' --exclude='model' "$RUNS" 2>/dev/null
for f in "$RUNS"/*/summary.json; do  # and the dev figures in the reply, in case it is cut short
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1], d.get('dev'), d.get('wall_time_s'))" "$f"
done
ls "$RUNS/.done"
