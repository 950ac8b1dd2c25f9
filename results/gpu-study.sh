#!/usr/bin/env bash
# The GPU study as run on the lent H100 (weights as an fp16 copy in gpu/, data in gpu/data).
# Usage there: bash results/gpu-study.sh PART  (PART a: the best pipeline; b: the other rows)
# Each stage has its own time limit so a slow one cannot take the rest down with it.
set -u
export PYTHONUNBUFFERED=1 MINIBERT_DATA=gpu/data MINIBERT_WEIGHTS=gpu/weights/all-MiniLM-L6-v2
R=/tmp/runs; OUT=${OUT:-/tmp/out}; mkdir -p $R $OUT
M="python3 -m minibert"; T="$M train --no-progress"
run() { local name=$1 limit=$2; shift 2; local t0=$SECONDS
  timeout $limit "$@" > $R/$name.log 2>&1; echo "$name rc=$? $((SECONDS - t0)) s"; tail -n 3 $R/$name.log; }
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print('torch', torch.__version__)"
if [ "$1" = a ]; then
  run mt-rr 170 $T --stage multitask --schedule round-robin --epochs 3 --out $R/mt-round-robin
  run mt-st 45 $T --stage single-task --epochs 2 --weights $R/mt-round-robin/best --name "mt round-robin + single-task" --out $R/mt-st
  run pretrain 120 $M pretrain --max-minutes 1.5 --epochs 3 --out $R/pretrain
  run pt-mt 170 $T --stage multitask --schedule round-robin --epochs 3 --weights $R/pretrain/model --name "pretrain + mt round-robin" --out $R/pt-mt
  run pt-mt-st 45 $T --stage single-task --epochs 2 --weights $R/pt-mt/best --name "pretrain + mt + single-task" --out $R/pt-mt-st
  run ensemble 40 $M ensemble --out $R/ensemble --checkpoints $R/mt-st/best $R/pt-mt-st/best
else
  run baseline 60 $T --stage baseline --epochs 3 --out $R/baseline
  run mt-random 120 $T --stage multitask --schedule random --epochs 3 --out $R/mt-random
  run mt-pcgrad 150 $T --stage multitask --schedule pcgrad --epochs 3 --out $R/mt-pcgrad
  run sentiment-sst 90 $M sentiment --dataset sst --option finetune --epochs 4 --no-progress --out $R/sentiment-sst
  run sentiment-cfimdb 90 $M sentiment --dataset cfimdb --option finetune --epochs 4 --no-progress --out $R/sentiment-cfimdb
  run bench-graph 60 $M bench --configs minilm-l6 --variants compiled+graph --no-hf --no-mix --steps 10 --repeats 3
fi
$M results --runs $R --out $R/results > $R/results.log 2>&1; cat $R/results/table.md 2>/dev/null
cd $R && tar czf $OUT/runs-$1.tgz --exclude='*.safetensors' --exclude='checkpoints' --exclude='step-*' . ; ls -la $OUT
