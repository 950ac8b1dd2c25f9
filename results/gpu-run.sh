#!/usr/bin/env bash
# The device check run on a lent GPU (data in gpu/data, weights as an fp16 copy in gpu/weights).
# Usage there: bash results/gpu-run.sh SECONDS [PROFILE] [JOBS] [EXTRA_SECONDS]
#   one whole `bash run_all.sh --profile PROFILE --jobs JOBS --keep-going`, timed (issues 6, 8):
#   every stage, the checks of steps 1-3 included (step 3's CUDA-graph check needs the GPU);
#   --keep-going, so a failed check does not stop the training stages after it.
#   Then, in EXTRA_SECONDS more (default 0: none), the GPU-only work run_all.sh does not do:
#   the checks that need CUDA (test_ops.py's CUDA-parametrized ones, test_optim.py's CUDA-graph
#   replay) and PCGrad's merge on CUDA (bench-pcgrad).
# nvidia-smi samples the GPU's use every 5 s meanwhile. run_all.sh stops after SECONDS (the
# whole script after SECONDS + EXTRA_SECONDS at most), so the logs still reach $OUT; a second
# call on the same warm machine goes on where this one stopped (run_all.sh skips completed
# stages).
set -u -o pipefail
export PYTHONUNBUFFERED=1 MINIBERT_DATA=${MINIBERT_DATA:-gpu/data}
export MINIBERT_WEIGHTS=${MINIBERT_WEIGHTS:-gpu/weights/all-MiniLM-L6-v2}
BUDGET=${1:?seconds}; PROFILE=${2:-full}; JOBS=${3:-4}; EXTRA=${4:-0}; OUT=${OUT:-/tmp/out}; RUNS=runs
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null
  python3 -c "import torch; print('torch', torch.__version__)"; nproc; } | tee "$OUT/device.txt"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 5 \
  > "$OUT/gpu-use.csv" 2>/dev/null &
SAMPLER=$!
start=$SECONDS
timeout "$BUDGET" bash run_all.sh --profile "$PROFILE" --jobs "$JOBS" --keep-going > "$OUT/run_all.log" 2>&1
echo "run_all: rc=$? in $((SECONDS - start)) s"
kill "$SAMPLER" 2>/dev/null
grep -E '^-- .*: ok in|FAILED|skipped|all stages done' "$OUT/run_all.log"
# one archive: the device tool returns only a few files from $OUT
tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='step-*' \
  --exclude='best' --exclude='model' "$RUNS" 2>/dev/null
for f in "$RUNS"/*/summary.json; do  # and the dev figures in the reply, in case it is cut short
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1], d.get('dev') or str(d)[:300], d.get('wall_time_s'))" "$f"
done
for f in "$RUNS"/logs/*-check.log; do echo "$f: $(grep -E '(passed|failed|error)' "$f" | tail -1)"; done
if [ "$EXTRA" -gt 0 ]; then
  t0=$SECONDS
  timeout "$EXTRA" python3 -m pytest checks/test_ops.py checks/test_optim.py -k cuda -p no:cacheprovider \
    > "$OUT/cuda-checks.log" 2>&1; echo "cuda checks: rc=$? in $((SECONDS - t0)) s: $(tail -n 1 "$OUT/cuda-checks.log")"
  left=$((EXTRA - SECONDS + t0))
  [ "$left" -gt 5 ] && timeout "$left" python3 -m minibert bench-pcgrad --device cuda --steps 50 \
    --json "$OUT/bench-pcgrad.json" 2>&1 | tail -n 8
fi
awk -F', ' '{u += $2; n++; if ($2+0 > m) m = $2+0} END {if (n) printf "GPU use: mean %.0f%%, max %d%% over %d samples\n", u/n, m, n}' "$OUT/gpu-use.csv"
