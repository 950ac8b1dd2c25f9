#!/usr/bin/env bash
# run_all.sh: the whole minibert study, end to end, one command on a fresh machine.
#
#   bash run_all.sh [--profile quick|full] [--jobs N] [--force] [--only STAGE] [--keep-going]
#                   [--data-dir DIR] [--weights DIR] [--runs DIR] [--setup-only]
#
# Profiles: quick (the default without CUDA: every stage on subsets, goal 15 minutes on 2 CPU
# cores; at most 13.0 in nine runs on the slowest machine measured: results/quick-cpu.md) and
# full (the default with CUDA: the whole table on one GPU, plus two more seeds of the best
# pipeline, one-task models, and their ensembles). Each stage writes its outputs under
# runs/STAGE, a runs folder holds one profile's runs (--runs DIR for another). A re-run skips
# the stages completed, resumes one stopped midway (Ctrl-C, a failure) from its checkpoint,
# and runs the others afresh (--force: every stage afresh, its old outputs removed first; a
# folder run_all.sh did not make is set aside as STAGE.previous). The first failing stage
# stops the run with the stage's name and the path of its log (--keep-going: runs the stages
# after it too, except those that need it, then names every failed one and exits with 1).
# --only STAGE runs one stage, once those it needs are done, then makes the results table
# again (not when STAGE was done already; --only results makes it again in any case). --jobs N
# runs up to N stages at once, each once the stages it needs are done (default: 1 on a CPU; on
# a GPU one per 12 GiB of its memory, at most 4).
set -euo pipefail
cd "$(dirname "$0")"

PROFILE="" FORCE=0 ONLY="" SETUP_ONLY=0 KEEP_GOING=0 JOBS=""
DATA_DIR="${MINIBERT_DATA:-}" WEIGHTS="${MINIBERT_WEIGHTS:-}" RUNS="runs"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile|--only|--jobs|--data-dir|--weights|--runs)
      [ $# -ge 2 ] || { echo "run_all.sh: $1 needs a value (see --help)" >&2; exit 2; }
      case "$1" in
        --profile) PROFILE="$2" ;; --only) ONLY="$2" ;; --jobs) JOBS="$2" ;;
        --data-dir) DATA_DIR="$2" ;; --weights) WEIGHTS="$2" ;; --runs) RUNS="$2" ;;
      esac
      shift 2 ;;
    --force) FORCE=1; shift ;;
    --keep-going) KEEP_GOING=1; shift ;;
    --setup-only) SETUP_ONLY=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;  # the header above
    *) echo "run_all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
# the options' values, checked before the setup's minutes
case "$PROFILE" in ''|quick|full) ;; *) echo "run_all.sh: --profile is quick or full" >&2; exit 2 ;; esac
case "$JOBS" in '') ;; *[!0-9]*|0) echo "run_all.sh: --jobs takes a number, 1 or more" >&2; exit 2 ;; esac
[ -n "$RUNS" ] || { echo "run_all.sh: --runs needs a folder" >&2; exit 2; }

PY="${PYTHON:-python3}"
say() { printf '\n== %s\n' "$*"; }

# ---- setup: install what is missing, fetch the weights, find the data ----------------
say "setup"
# (found, not imported: importing torch alone takes seconds, and the look below imports it)
missing=$("$PY" - <<'EOF'
import importlib.util
# torch (the pinned version: a CPU build where pip's index has one), the runtime needs, the
# plot, and the checks that grade steps 1-3 (transformers/tokenizers: oracles)
need = {"torch": "torch==2.13.0", "numpy": "numpy", "safetensors": "safetensors", "regex": "regex",
        "tqdm": "tqdm", "matplotlib": "matplotlib", "pytest": "pytest", "hypothesis": "hypothesis",
        "transformers": "transformers", "tokenizers": "tokenizers"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "installing: $missing"
  "$PY" -m pip install -q $missing
fi
if [ -z "$WEIGHTS" ]; then
  "$PY" -m minibert fetch-weights
  WEIGHTS="weights/all-MiniLM-L6-v2"
fi
export MINIBERT_WEIGHTS="$WEIGHTS"
if [ -z "$DATA_DIR" ]; then
  if [ -d data ]; then DATA_DIR=data; elif [ -d ../shared/data ]; then DATA_DIR=../shared/data; else DATA_DIR=data; fi
fi
export MINIBERT_DATA="$DATA_DIR"
need_files="ids-sst-train.csv ids-sst-dev.csv ids-sst-test-student.csv ids-cfimdb-train.csv ids-cfimdb-dev.csv
ids-cfimdb-test-student.csv quora-train.csv quora-dev.csv sts-train.csv sts-dev.csv sts-test-student.csv"
absent=""
for f in $need_files; do [ -f "$DATA_DIR/$f" ] || absent="$absent $f"; done
if [ -n "$absent" ]; then
  echo "run_all.sh: the data is not in $DATA_DIR; missing:$absent" >&2
  echo "Put the CS224N CSVs there (e.g. ln -s ../shared/data data), or pass --data-dir DIR." >&2
  exit 1
fi
# one look at the machine: CUDA or not, the default --jobs there, its CPU cores, torch; and
# the quick subsets' size, which train --quick owns (minibert/train.py QUICK)
look=$("$PY" -c "import os, torch; c = torch.cuda.is_available()
from minibert.train import QUICK
# on a GPU, one stage per 12 GiB of its memory, at most 4; on a CPU, one at a time
jobs = max(1, min(4, torch.cuda.get_device_properties(0).total_memory // (12 * 2**30))) if c else 1
print(int(c), jobs, os.cpu_count() or 1, QUICK['limit'], 'torch', torch.__version__, 'cuda' if c else 'cpu')") \
  || { echo "run_all.sh: $PY cannot import torch and minibert (the error is above)" >&2; exit 1; }
read -r HAS_CUDA DEFAULT_JOBS CPUS QUICK_LIMIT TORCH <<EOF
$look
EOF
[ -n "$PROFILE" ] || { [ "$HAS_CUDA" = 1 ] && PROFILE=full || PROFILE=quick; }
JOBS="${JOBS:-$DEFAULT_JOBS}"
if [ "$JOBS" != 1 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then  # share the CPU cores between the stages
  export OMP_NUM_THREADS=$(( CPUS / JOBS ))
  [ "$OMP_NUM_THREADS" -gt 0 ] || OMP_NUM_THREADS=1
fi
echo "profile $PROFILE, $JOBS stage(s) at a time, data $DATA_DIR, weights $WEIGHTS, runs $RUNS, $TORCH"
[ "$SETUP_ONLY" = 1 ] && exit 0

# ---- the profiles: what each stage is given ------------------------------------------
if [ "$PROFILE" = quick ]; then
  # train --quick: subsets, smaller batches, a larger step for the heads (minibert/train.py QUICK)
  LIMIT="--limit ${MINIBERT_QUICK_LIMIT:-$QUICK_LIMIT}"  # examples per task and split
  MT_EPOCHS=2 ST_EPOCHS=1 PT_ARGS="--limit 2000 --epochs 1 --head-warmup-steps 6"  # 16 steps
  QUICK_TRAIN="--quick"
  SENT_ARGS="--epochs 2 --lr 1e-4 --limit ${MINIBERT_QUICK_SENT_LIMIT:-500}"
  CF_ARGS="--epochs 2 --lr 1e-4 --max-length 128 --limit 200"
else
  LIMIT="" QUICK_TRAIN=""
  MT_EPOCHS=3 ST_EPOCHS=2 PT_ARGS="--epochs 3"
  SENT_ARGS="--epochs 4" CF_ARGS="--epochs 4 --max-length 512"
fi

# ---- stages: declared with what each needs, then run -----------------------------------
# Each stage writes its outputs under $RUNS/NAME, $RUNS/.started/NAME (its command line) when
# it starts and $RUNS/.done/NAME (the profile) when complete. A runs folder holds one
# profile's runs ($RUNS/.profile): another profile's are never replaced without --force.
# --jobs 1 runs the stages one after another in the order below, each one's output on the
# terminal and in its log. --jobs N runs up to N at once, each as soon as the stages it needs
# (--after) are done, its output in its log only: MiniLM leaves a GPU mostly idle between its
# small kernels, so several stages share one GPU well.
if [ -f "$RUNS/.profile" ] && [ "$(cat "$RUNS/.profile")" != "$PROFILE" ] && [ "$FORCE" = 0 ]; then
  echo "run_all.sh: $RUNS holds the $(cat "$RUNS/.profile") profile's runs: pass --runs DIR for the" \
       "$PROFILE profile's (or --force to run it here, replacing them)" >&2
  exit 2
fi
mkdir -p "$RUNS/.done" "$RUNS/.started" "$RUNS/logs"
NAMES=() NEEDS=() CMDS=() DECLARED=() UNMET=""
done_here() {  # done_here NAME: stage NAME completed in this profile
  [ -f "$RUNS/.done/$1" ] && [ "$(cat "$RUNS/.done/$1")" = "$PROFILE" ]
}
stage() {  # stage NAME [--after "NAME ..." | --last] command...
  local name="$1" after="" need; shift
  DECLARED+=("$name")
  if [ "$1" = --after ]; then after="$2"; shift 2; fi
  if [ "$1" = --last ]; then after="*"; shift; fi  # once every other stage has ended, however
  if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ]; then
    # --only NAME: that stage, then the results table (--last) again if it runs
    [ "$after" = "*" ] && [ ${#NAMES[@]} -gt 0 ] || return 0
  fi
  if [ -n "$ONLY" ] && [ "$after" != "*" ]; then  # --only: what it needs must be done already
    for need in $after; do done_here "$need" || UNMET="$UNMET $need"; done
  fi
  # done in this profile: skipped, except the results table once any other stage runs, or
  # when --only names it
  if done_here "$name" && [ "$FORCE" = 0 ] \
     && { [ "$after" != "*" ] || { [ ${#NAMES[@]} = 0 ] && [ "$ONLY" != "$name" ]; }; }; then
    echo "-- $name: done already (--force to run again)"; return 0
  fi
  NAMES+=("$name"); NEEDS+=("$after"); CMDS+=("$(printf '%q ' "$@")")
}
M=("$PY" -m minibert)  # arrays: the python path and a data path may hold spaces
TRAIN=("${M[@]}" train --data-dir "$DATA_DIR" $QUICK_TRAIN $LIMIT)

# steps 1-3: each assignment grades its step with the checks, then shows it working
stage model-check     "$PY" assignments/01_bert_sanity.py
stage tokenizer-check "$PY" assignments/02_tokenizer.py
stage optimizer-check "$PY" assignments/03_optimizer.py --quick
stage sentiment-sst   "${M[@]}" sentiment --dataset sst --option finetune $SENT_ARGS --out "$RUNS/sentiment-sst"
stage sentiment-cfimdb "${M[@]}" sentiment --dataset cfimdb --option finetune $CF_ARGS --out "$RUNS/sentiment-cfimdb"
stage pretrain        "${M[@]}" pretrain --data-dir "$DATA_DIR" $PT_ARGS --out "$RUNS/pretrain"
stage baseline        "${TRAIN[@]}" --stage baseline --epochs $MT_EPOCHS --out "$RUNS/baseline"
stage mt-round-robin  "${TRAIN[@]}" --stage multitask --schedule round-robin --epochs $MT_EPOCHS --out "$RUNS/mt-round-robin"
stage mt-random       "${TRAIN[@]}" --stage multitask --schedule random --epochs $MT_EPOCHS --out "$RUNS/mt-random"
stage mt-pcgrad       "${TRAIN[@]}" --stage multitask --schedule pcgrad --epochs $MT_EPOCHS --out "$RUNS/mt-pcgrad"
stage pt-mt    --after pretrain \
  "${TRAIN[@]}" --stage multitask --schedule round-robin --epochs $MT_EPOCHS \
  --weights "$RUNS/pretrain/model" --name "pretrain + mt round-robin" --out "$RUNS/pt-mt"
stage mt-st    --after mt-round-robin \
  "${TRAIN[@]}" --stage single-task --epochs $ST_EPOCHS --weights "$RUNS/mt-round-robin/best" \
  --name "mt round-robin + single-task" --out "$RUNS/mt-st"
stage pt-mt-st --after pt-mt \
  "${TRAIN[@]}" --stage single-task --epochs $ST_EPOCHS --weights "$RUNS/pt-mt/best" \
  --name "pretrain + mt + single-task" --out "$RUNS/pt-mt-st"
# beyond the paper: the paraphrase head as a cross-encoder (minibert/heads.py), and R-Drop on
# SST in the multitask stage (results/study.md): the best pipeline
cross_pipeline() {  # cross_pipeline NAME SEED LABEL: its multitask stage NAME, then NAME-st
  stage "$1" \
    "${TRAIN[@]}" --stage multitask --schedule round-robin --para-input cross --sst-rdrop 1 --epochs $MT_EPOCHS \
    --seed "$2" --name "mt round-robin, cross PD$3" --out "$RUNS/$1"
  stage "$1-st" --after "$1" \
    "${TRAIN[@]}" --stage single-task --epochs $ST_EPOCHS --weights "$RUNS/$1/best" \
    --seed "$2" --name "mt cross + single-task$3" --out "$RUNS/$1-st"
}
ensemble_stage() {  # ensemble_stage NAME MEMBER...: the members' best/ averaged, once they are done
  local name="$1" members=() m; shift
  for m in "$@"; do members+=("$RUNS/$m/best"); done
  stage "$name" --after "$*" "${M[@]}" ensemble --data-dir "$DATA_DIR" $LIMIT --out "$RUNS/$name" --checkpoints "${members[@]}"
}
cross_pipeline mt-cross 0 ""
if [ "$PROFILE" = full ]; then  # too long for quick: two more seeds of the best pipeline,
  cross_pipeline mt-cross-seed1 1 ", seed 1"
  cross_pipeline mt-cross-seed2 2 ", seed 2"
  # an STS specialist: a cross-encoder STS head on mt-cross's encoder (which learnt to read
  # joined pairs from Quora), trained on STS alone; it votes on STS only in the ensemble
  stage sts-cross --after mt-cross \
    "${TRAIN[@]}" --stage multitask --tasks sts --sts-input cross --epochs $MT_EPOCHS \
    --weights "$RUNS/mt-cross/best/encoder" --name "STS cross-encoder on mt-cross" --out "$RUNS/sts-cross"
  SEED_MEMBERS="mt-cross-st mt-cross-seed1-st mt-cross-seed2-st sts-cross"
  ensemble_stage ensemble-seeds $SEED_MEMBERS
  # one-task members (results/study.md): SST alone with R-Drop 3 and STS alone with R-Drop 1,
  # two seeds each, each voting on its own task only; with the ensemble above they make the
  # study's best kind of ensemble
  for seed in 0 1; do
    stage "sst-alone-$seed" \
      "${TRAIN[@]}" --stage multitask --tasks sst --sst-rdrop 3 --epochs 4 --seed "$seed" \
      --name "SST alone, R-Drop 3, seed $seed" --out "$RUNS/sst-alone-$seed"
    stage "sts-alone-$seed" \
      "${TRAIN[@]}" --stage multitask --tasks sts --sts-rdrop 1 --epochs 3 --seed "$seed" \
      --name "STS alone, R-Drop 1, seed $seed" --out "$RUNS/sts-alone-$seed"
  done
  ensemble_stage ensemble-best $SEED_MEMBERS sst-alone-0 sst-alone-1 sts-alone-0 sts-alone-1
fi
ensemble_stage ensemble mt-cross-st mt-st pt-mt-st mt-random
stage results --last  "${M[@]}" results --runs "$RUNS" --out "$RUNS/results"  # the table of what ran

if [ -n "$ONLY" ] && [[ " ${DECLARED[*]} " != *" $ONLY "* ]]; then
  echo "run_all.sh: --only $ONLY: no such stage in the $PROFILE profile; its stages: ${DECLARED[*]}" >&2
  exit 2
fi
if [ -n "$UNMET" ]; then
  echo "run_all.sh: --only $ONLY needs$UNMET, not done in $RUNS for the $PROFILE profile:" \
       "run it first (--only NAME), or run without --only" >&2
  exit 2
fi

# ---- run them ---------------------------------------------------------------------------
STATE=()  # per stage: wait, run, ok, failed, skipped
PIDS=()
for i in "${!NAMES[@]}"; do STATE[$i]=wait; done

state_of() {  # state_of NAME: its state in this run; "" when it is not in it (done already, --only)
  local i
  for i in "${!NAMES[@]}"; do
    if [ "${NAMES[$i]}" = "$1" ]; then echo "${STATE[$i]}"; return; fi
  done
}

run_stage() {  # run_stage I: stage I's command, its output in its log; status: the command's
  local name="${NAMES[$1]}" log="$RUNS/logs/${NAMES[$1]}.log" start=$SECONDS rc=0 cmd="${CMDS[$1]}"
  local folder="$RUNS/$name" started="$RUNS/.started/$name"
  rm -f "$RUNS/.done/$name"
  if [ -f "$started" ] && [ "$(cat "$started")" = "$cmd" ] && [ "$FORCE" = 0 ]; then
    # stopped midway (Ctrl-C, a failure) with the same command line: go on from its checkpoint
    if [ -d "$folder/checkpoints" ]; then cmd="$cmd --resume"; fi
  elif [ -f "$started" ]; then
    rm -rf "${folder:?}"  # ours, from another command line (or --force): afresh
  elif [ -e "$folder" ]; then  # not made by this script (a stage run by hand): kept, set aside
    rm -rf "${folder:?}.previous"
    mv "$folder" "$folder.previous"
    echo "run_all.sh: $folder was not made by run_all.sh: moved to $folder.previous"
  fi
  echo "$PROFILE" > "$RUNS/.profile"  # the folder is this profile's from its first stage on
  echo "${CMDS[$1]}" > "$started"
  if [ "$JOBS" = 1 ]; then
    say "$name: $cmd"
    # tee -i: Ctrl-C reaches the stage, which saves a checkpoint after its step; tee must
    # live on to pass that on, or the stage would die writing to a closed pipe
    eval "$cmd" 2>&1 | tee -i "$log" || rc=$?
  else
    say "$name (its output: $log): $cmd"
    eval "$cmd" > "$log" 2>&1 || rc=$?
  fi
  if [ "$rc" != 0 ]; then
    echo "run_all.sh: stage '$name' FAILED; its log: $log" >&2
    return "$rc"
  fi
  echo "-- $name: ok in $((SECONDS - start)) s"
  echo "$PROFILE" > "$RUNS/.done/$name"
}

finished() {  # finished I OK: record how stage I ended; without --keep-going a failure stops the run
  if [ "$2" = 1 ]; then STATE[$1]=ok; return; fi
  STATE[$1]=failed
  [ "$KEEP_GOING" = 1 ] || STOPPING=1
}

if [ "$JOBS" != 1 ]; then
  # each stage in its own process group, so that Ctrl-C or a timeout stops it whole (its own
  # child processes too) with the script
  set -m
  stop_all() { for p in $(jobs -p); do kill "-$1" -- "-$p" 2>/dev/null; done; }
  # Ctrl-C: passed to every running stage, which saves a checkpoint after its step (train,
  # pretrain); a second Ctrl-C, or a TERM, stops them at once
  stop_after_step() {
    trap 'stop_all TERM; exit 130' INT
    echo "run_all.sh: Ctrl-C: the running stages stop after their step, with a checkpoint" \
         "(Ctrl-C again: at once)" >&2
    stop_all INT
    wait
    exit 130
  }
  trap stop_after_step INT
  trap 'stop_all TERM; exit 143' TERM
fi
STOPPING=0
while :; do
  running=0 waiting=0
  for i in "${!NAMES[@]}"; do  # collect the stages that ended
    [ "${STATE[$i]}" = run ] || continue
    if kill -0 "${PIDS[$i]}" 2>/dev/null; then running=$((running + 1)); continue; fi
    if wait "${PIDS[$i]}"; then finished "$i" 1; else finished "$i" 0; fi
  done
  for i in "${!NAMES[@]}"; do  # start those whose needs are met, in order, up to --jobs at once
    [ "${STATE[$i]}" = wait ] || continue
    [ "$STOPPING" = 0 ] || break
    ready=1
    if [ "${NEEDS[$i]}" = "*" ]; then  # --last
      for j in "${!NAMES[@]}"; do
        case "$j:${STATE[$j]}" in "$i":*) ;; *:wait|*:run) ready=0 ;; esac
      done
    else
      for need in ${NEEDS[$i]}; do
        case "$(state_of "$need")" in
          failed|skipped) STATE[$i]=skipped; ready=0
                          echo "run_all.sh: stage '${NAMES[$i]}' skipped: it needs '$need', which did not finish" >&2
                          break ;;
          wait|run) ready=0 ;;
        esac
      done
    fi
    if [ "$ready" = 0 ] || [ "$running" -ge "$JOBS" ]; then
      [ "${STATE[$i]}" = wait ] && waiting=1
      continue
    fi
    if [ "$JOBS" = 1 ]; then
      if run_stage "$i"; then finished "$i" 1; else finished "$i" 0; fi
    else
      run_stage "$i" & PIDS[$i]=$!; STATE[$i]=run; running=$((running + 1))
    fi
  done
  [ "$running" = 0 ] && { [ "$waiting" = 0 ] || [ "$STOPPING" = 1 ]; } && break
  sleep 1
done
[ "$STOPPING" = 1 ] && exit 1
FAILED="" SKIPPED=""  # in the stages' order, not the order in which side-by-side stages ended
for i in "${!NAMES[@]}"; do
  case "${STATE[$i]}" in
    failed) FAILED="$FAILED ${NAMES[$i]}" ;;
    skipped) SKIPPED="$SKIPPED ${NAMES[$i]}" ;;
  esac
done
if [ -n "$FAILED$SKIPPED" ]; then
  echo "run_all.sh: these stages FAILED:$FAILED (logs in $RUNS/logs)${SKIPPED:+; skipped, as they need one of them:$SKIPPED}" >&2
  exit 1
fi
say "all stages done in $SECONDS s: the table is $RUNS/results/table.md"
cat "$RUNS/results/table.md" 2>/dev/null || true
