#!/bin/bash
# One device call: the training-step bench, MiniLM-L6 (+ real data mix), then bert-base.
export PYTHONUNBUFFERED=1 MINIBERT_DATA=gpu/data MINIBERT_WEIGHTS=gpu/weights/all-MiniLM-L6-v2
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv | tee $OUT/nvidia-smi.txt
mkdir -p $OUT/minilm $OUT/base
timeout 130 python3 -m minibert bench --out $OUT/minilm --configs minilm-l6 --steps 10 --repeats 5 --mix-batches 150 2>&1 | tee $OUT/minilm/bench.log | grep "^|\|real\|peak"
timeout 150 python3 -m minibert bench --out $OUT/base --configs bert-base --no-mix --steps 10 --repeats 5 2>&1 | tee $OUT/base/bench.log | grep "^|\|peak\|Error"
