#!/usr/bin/env bash
# Continued MLM pretraining before the best pipeline (issue 6), on a lent GPU (data in gpu/data,
# weights as an fp16 copy in gpu/weights, as gpu-run.sh). Three arms side by side, one seed:
#   control: the best pipeline from MiniLM's weights (run_all.sh's mt-cross, then mt-cross-st)
#   pt3:     `pretrain --epochs 3` (run_all.sh's pretrain stage), then the same pipeline on it
#   pt10:    `pretrain --epochs 10 --max-minutes M`, then the same pipeline on it
# Usage there: bash results/gpu-mlm.sh SECONDS (every command stops by then; M = SECONDS / 150)
set -u -o pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 MINIBERT_DATA=${MINIBERT_DATA:-gpu/data}
export MINIBERT_WEIGHTS=${MINIBERT_WEIGHTS:-gpu/weights/all-MiniLM-L6-v2}
BUDGET=${1:?seconds}; R=runs-mlm OUT=${OUT:-/tmp/out}
mkdir -p "$R" "$OUT"
left() { echo $((BUDGET - SECONDS)); }
T="python3 -m minibert train --no-progress --stage multitask --schedule round-robin --para-input cross --sst-rdrop 1 --epochs 3 --seed 0"
S="python3 -m minibert train --no-progress --stage single-task --epochs 2 --seed 0"
arm() {  # arm NAME [PRETRAIN_ARGS...]: (pretraining,) the multitask stage, the single-task stage
  local name=$1 weights=(); shift
  if [ $# -gt 0 ]; then
    timeout "$(left)" python3 -m minibert pretrain "$@" --out "$R/$name-pretrain" > "$R/$name-pretrain.log" 2>&1 || return 1
    weights=(--weights "$R/$name-pretrain/model")
  fi
  timeout "$(left)" $T "${weights[@]}" --name "$name" --out "$R/$name" > "$R/$name.log" 2>&1 || return 1
  timeout "$(left)" $S --weights "$R/$name/best" --name "$name + single-task" --out "$R/$name-st" > "$R/$name-st.log" 2>&1
}
start=$SECONDS
arm control &
arm pt3 --epochs 3 &
arm pt10 --epochs 10 --max-minutes "$(python3 -c "print(round($BUDGET / 150, 2))")" &
wait
echo "all arms: $((SECONDS - start)) s"
python3 -m minibert results --runs "$R" --out "$R/results" > /dev/null && cat "$R/results/table.md"
tail -n 2 "$R"/*pretrain.log  # the MLM's held-out figures
tar czf "$OUT/mlm.tgz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='best' --exclude='model' "$R" 2>/dev/null
