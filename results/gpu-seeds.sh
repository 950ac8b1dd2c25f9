#!/usr/bin/env bash
# More seeds on a lent GPU (issue 6): N runs of the best pipeline side by side (mt-cross, then
# its single-task stage and an STS cross-encoder specialist on its encoder), then ensembles of
# 3 and of all N pipelines, with and without their specialists. Data and weights as gpu-run.sh.
# Usage there: bash results/gpu-seeds.sh SECONDS "SEED ..." (the pipelines stop after SECONDS)
set -u -o pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MINIBERT_WEIGHTS=${MINIBERT_WEIGHTS:-gpu/weights/all-MiniLM-L6-v2}
BUDGET=${1:?seconds}; SEEDS=${2:-"3 4 5 6 7 8"}; D=${MINIBERT_DATA:-gpu/data} R=runs-seeds OUT=${OUT:-/tmp/out}
left() { echo $((BUDGET - SECONDS)); }
mkdir -p "$R" "$OUT"
pipeline() {  # pipeline SEED
  timeout "$(left)" python3 -m minibert train --data-dir "$D" --stage multitask --schedule round-robin --para-input cross --sst-rdrop 1 --epochs 3 --seed "$1" \
     --out "$R/mt-$1" > "$R/mt-$1.log" 2>&1 || return 1
  timeout "$(left)" python3 -m minibert train --data-dir "$D" --stage single-task --epochs 2 --weights "$R/mt-$1/best" --seed "$1" --out "$R/st-$1" > "$R/st-$1.log" 2>&1 &
  timeout "$(left)" python3 -m minibert train --data-dir "$D" --stage multitask --tasks sts --sts-input cross --epochs 3 --weights "$R/mt-$1/best/encoder" --seed "$1" \
     --out "$R/sts-$1" > "$R/sts-$1.log" 2>&1
  wait
}
start=$SECONDS
for s in $SEEDS; do pipeline "$s" & done
wait
echo "pipelines: $((SECONDS - start)) s"
ens() {  # ens NAME CHECKPOINT...
  local name=$1; shift
  timeout 60 python3 -m minibert ensemble --data-dir $D --out "$R/$name" --checkpoints "$@" > "$R/$name.log" 2>&1
}
set -- $SEEDS
ens ens3 "$R/st-$1/best" "$R/st-$2/best" "$R/st-$3/best" &
ens ens3-sts "$R/st-$1/best" "$R/st-$2/best" "$R/st-$3/best" "$R/sts-$1/best" "$R/sts-$2/best" "$R/sts-$3/best" &
ens ensN $(for s in $SEEDS; do echo "$R/st-$s/best"; done) &
ens ensN-sts $(for s in $SEEDS; do echo "$R/st-$s/best $R/sts-$s/best"; done) &
wait
echo "all: $((SECONDS - start)) s"
for f in "$R"/*/summary.json; do
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1], {k: round(v, 4) for k, v in d['dev'].items()}, d.get('wall_time_s'))" "$f"
done
tar czf "$OUT/seeds.tgz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='best' "$R" 2>/dev/null
