#!/usr/bin/env bash
# One prepared GPU burst for a session that is lent a device machine (one H200, 16 cores, 15 minutes of
# device time in all, one command of at most 600 s). Stages, each independent (a failed stage does not
# stop the next), each one's output tee'd to $OUT/<stage>.log:
#
#   env    nvidia-smi, python/torch/CUDA versions, which project dependencies are missing (carried wheels
#          from .carry/whl are installed into a temporary --target folder when one is), whether an offline
#          `pip install --no-deps --no-build-isolation -e .` works (PYTHONPATH=. is used either way), and a
#          CUDA sanity check of wct.linalg.eigh (float64, forward + backward against the CPU).
#   tests  `pytest -m gpu` over the files that hold gpu-marked tests, then the quick suite of tests/wct,
#          tests/models and the wct/ doctests on the device's own torch/numpy (pytest-xdist when present).
#   bench  benchmarks/bench_eigh.py --devices cuda and benchmarks/bench_generator.py --device cuda with
#          small repetition counts; JSON + markdown packed into $OUT/bench.tar.
#   train  photo->Monet and photo->Van Gogh (configs/demo-monet.yaml, configs/demo-vangogh.yaml) from step 0,
#          in parallel by default (see "Why parallel" below), each stopped by `timeout -s TERM` (the trainer
#          finishes the step and saves a checkpoint), then `train.py export --fp16` (generator + style bank),
#          packed with the last sample PNG, summary.json and the metrics tail into $OUT/<style>.tar.
#
# What comes back: the device tool returns at most 8 files from $OUT, so everything is packed into exactly
# these 8: summary.md, env.log, tests.log, bench.log, train.log, bench.tar, monet.tar, vangogh.tar.
# Training checkpoints (~80 MB each) stay on the device; only the exports (~4 MB each) come back.
# summary.md is rewritten after every stage (a call killed at its limit still returns what was done) and
# printed last, so the tool's output tail shows it.
#
# The wall-time budget (--budget, default 540 s: one 600 s call with a minute of margin) is split: env
# <= 5 %, tests <= 17 %, bench <= 17 % (eigh 6 + 3 %, generator 8 %), and training gets everything left except a reserve for export and
# packing (6 %, at least 25 s); each command gets at least 30 s while the budget lasts. Stages that
# finish early leave their time to training.
#
# Why parallel: one demo training step (96 px, batch 1, width 32; profiled on CPU with torch.profiler,
# see checkpoints/README.md "GPU burst") is ~20,750 leaf aten calls, ~7,000 of them
# compute ops (copy_ 2,174, fill_ 662, mul 622, add 558, ..., the per-parameter Adam updates among them)
# that each become a kernel launch on CUDA, 315 host synchronisations (aten::_local_scalar_dense:
# .item()/float() on tensors) and ~25 GFLOP (the profiler's conv/mm count). On an H200 that arithmetic
# takes well under a millisecond while thousands of launches from Python and 315 round trips take tens of
# milliseconds: one run leaves the GPU idle most of the time, so two
# processes time-share it with little loss and each gets the whole training time instead of half of it.
# `--train-mode sequential` splits the time instead (each run has the GPU alone); the per-run
# s/step in summary.md shows which was right on the real machine.
#
# Usage (on the device machine, through the device tool's `run`; benchmarks/device_stage.sh prepares the
# data and prints the exact call):
#   bash benchmarks/device_burst.sh                       # all stages, 540 s
#   bash benchmarks/device_burst.sh --budget 200 --stages train
# Dry run here on the CPU (tiny sizes, a few training steps, the same plumbing and outputs):
#   OUT=/tmp/dev_out nice -n 19 bash benchmarks/device_burst.sh --budget 120 --dry-run
#
# Options: --budget S   --dry-run   --stages env,tests,bench,train   --data DIR (pairs <DIR>/<style>2photo;
# default .carry/artworks-mini, in a dry run ../shared/data/artworks-mini when .carry is absent)
# --styles "monet vangogh"   --train-mode parallel|sequential   --train-args "key=value ..." (extra train.py
# overrides, e.g. "train.batch_size=4").  Environment: OUT (default /tmp/device_burst_out), PYTHON (python3).
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

usage() { sed -n '2,/^set -u$/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -u$/d'; }

BUDGET=540; DRY=0; STAGES="env,tests,bench,train"; DATA=""; STYLES="monet vangogh"; MODE=parallel
TRAIN_ARGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) BUDGET=${2:-}; shift 2 ;;
    --budget=*) BUDGET=${1#*=}; shift ;;
    --dry-run) DRY=1; shift ;;
    --stages) STAGES=${2:-}; shift 2 ;;
    --stages=*) STAGES=${1#*=}; shift ;;
    --data) DATA=${2:-}; shift 2 ;;
    --data=*) DATA=${1#*=}; shift ;;
    --styles) STYLES=${2:-}; shift 2 ;;
    --styles=*) STYLES=${1#*=}; shift ;;
    --train-mode) MODE=${2:-}; shift 2 ;;
    --train-mode=*) MODE=${1#*=}; shift ;;
    --train-args) TRAIN_ARGS=${2:-}; shift 2 ;;
    --train-args=*) TRAIN_ARGS=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$BUDGET" in ''|*[!0-9]*) echo "error: --budget takes whole seconds, got '$BUDGET'" >&2; exit 2 ;; esac
if [ "$BUDGET" -lt 30 ]; then echo "error: --budget must be at least 30 s, got $BUDGET" >&2; exit 2; fi
case "$MODE" in parallel|sequential) ;; *) echo "error: --train-mode is parallel or sequential, got '$MODE'" >&2; exit 2 ;; esac
for s in ${STAGES//,/ }; do
  case "$s" in env|tests|bench|train) ;; *) echo "error: unknown stage '$s' (env, tests, bench, train)" >&2; exit 2 ;; esac
done
for s in $STYLES; do
  [ -f "configs/demo-$s.yaml" ] || { echo "error: no configs/demo-$s.yaml for style '$s'" >&2; exit 2; }
done

PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/device_burst_out}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_burst.XXXXXX") || exit 2
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
if [ -z "$DATA" ]; then
  DATA=.carry/artworks-mini
  if [ "$DRY" = 1 ] && [ ! -d "$DATA" ]; then DATA=../shared/data/artworks-mini; fi
fi
# dry runs yield the CPU to other work (nice 19) unless BURST_NICE says otherwise (the test sets it empty, so
# that background jobs at a higher priority cannot starve it past its budget)
if [ "$DRY" = 1 ]; then DEV=cpu; NICE=${BURST_NICE-nice -n 19}; else DEV=cuda; NICE=""; fi
WHL=.carry/whl

T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(date +%s) + T0 )); }
# export + packing reserve: 6 % of the budget, at least 25 s (20 s in a dry run: tiny models)
RESERVE=$(( BUDGET * 6 / 100 )); MINRES=$(( DRY ? 20 : 25 )); [ "$RESERVE" -lt "$MINRES" ] && RESERVE=$MINRES
# cap PERCENT: this command's share of the budget (at least 30 s: python + torch start-up alone takes
# several seconds), never more than what is left before the export reserve.
cap() {
  local c=$(( BUDGET * $1 / 100 )) l=$(( $(left) - RESERVE ))
  [ "$c" -lt 30 ] && c=30
  [ "$c" -gt "$l" ] && c=$l
  [ "$c" -lt 0 ] && c=0
  echo "$c"
}
# tmo SECONDS CMD...: run CMD under timeout (TERM at SECONDS, KILL 10 s later); 124 = stopped by the budget.
tmo() {
  local s=$1; shift
  if [ "$s" -lt 3 ]; then echo "skipped (no time left in the budget): $*"; return 124; fi
  timeout -k 10 "$s" "$@"
}

declare -A RC SECS
declare -a DONE=()
NOTES="$WORK/notes.md"; : > "$NOTES"
note() { echo "$*" >> "$NOTES"; }

write_summary() {
  local s f
  {
    echo "# device_burst summary"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), host ${HOSTNAME:-?}, budget ${BUDGET} s, elapsed $(elapsed) s, device $DEV," \
         "dry run: $([ "$DRY" = 1 ] && echo yes || echo no), train mode $MODE, data $DATA"
    echo
    echo "| stage | rc | seconds |"
    echo "|---|---:|---:|"
    for s in "${DONE[@]}"; do echo "| $s | ${RC[$s]} | ${SECS[$s]} |"; done
    echo
    cat "$NOTES"
    echo
    echo "Files in \$OUT:"
    for f in "$OUT"/*; do [ -f "$f" ] && echo "- $(basename "$f") ($(stat -c %s "$f") bytes)"; done
  } > "$WORK/summary.md" && cp "$WORK/summary.md" "$OUT/summary.md"
}

run_stage() {  # run_stage NAME: stage_NAME in this shell (its exports persist), output tee'd to $OUT/NAME.log
  local name=$1 s rc tee_pid
  case ",$STAGES," in *",$name,"*) ;; *) return 0 ;; esac
  s=$(date +%s)
  echo "=== stage $name: start at +$(elapsed) s, $(left) s of the budget left ===" | tee "$OUT/$name.log"
  "stage_$name" > >(tee -a "$OUT/$name.log") 2>&1
  rc=$?
  tee_pid=$!
  wait "$tee_pid" 2>/dev/null
  RC[$name]=$rc; SECS[$name]=$(( $(date +%s) - s )); DONE+=("$name")
  echo "=== stage $name: rc $rc in ${SECS[$name]} s ===" | tee -a "$OUT/$name.log"
  write_summary
}

# ------------------------------------------------------------------------------------------------- env
stage_env() {
  local missing=() rc=0
  date -u; uname -a; echo "cores: $(nproc)"; free -g 2>/dev/null | head -2; df -h "$WORK" 2>/dev/null | tail -1
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi || rc=1
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1
  else
    echo "nvidia-smi: not found"; [ "$DRY" = 1 ] || rc=1
  fi
  echo "python: $(command -v "$PY") $($PY -V 2>&1)"
  # pyproject's dependencies and the test tools, as module:distribution (one interpreter, no imports: fast)
  missing_pkgs() {
    $PY - "$@" <<'EOF'
import importlib.util, sys
print(" ".join(m.split(":")[1] for m in sys.argv[1:] if importlib.util.find_spec(m.split(":")[0]) is None))
EOF
  }
  # shellcheck disable=SC2207
  missing=($(missing_pkgs torch:torch torchvision:torchvision PIL:pillow kornia:kornia kornia_rs:kornia-rs \
    lpips:lpips skimage:scikit-image safetensors:safetensors tqdm:tqdm tensorboard:tensorboard yaml:pyyaml \
    matplotlib:matplotlib numpy:numpy sklearn:scikit-learn gradio:gradio pytest:pytest \
    pytest_timeout:pytest-timeout xdist:pytest-xdist))
  echo "missing python packages: ${missing[*]:-none}"
  # the carried wheels (benchmarks/device_stage.sh) hold kornia, kornia_rs and lpips: installed only when
  # one of those is missing (they are built for the device's Python 3.12)
  if [[ " ${missing[*]} " =~ \ (kornia|kornia-rs|lpips)\  ]] && compgen -G "$WHL/*.whl" >/dev/null; then
    echo "installing the carried wheels from $WHL into $WORK/site:"; ls "$WHL"
    if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHL"/*.whl; then
      export PYTHONPATH="$WORK/site:$PYTHONPATH"
      # shellcheck disable=SC2207
      missing=($(missing_pkgs kornia:kornia kornia_rs:kornia-rs lpips:lpips gradio:gradio xdist:pytest-xdist))
      echo "still missing after the wheels: ${missing[*]:-none}"
    else
      echo "pip install of the carried wheels FAILED"; rc=1
    fi
  fi
  note "- env: missing packages: ${missing[*]:-none}"
  if [ "$DRY" = 1 ]; then
    echo "editable install check: skipped in a dry run (would reinstall this machine's environment)"
  elif tmo 60 $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$WORK/pip_e.log" 2>&1; then
    echo "offline 'pip install --no-deps --no-build-isolation --no-index -e .': works"; note "- env: offline editable install works"
  else
    echo "offline 'pip install --no-deps --no-build-isolation --no-index -e .': FAILED (PYTHONPATH=. is used):"
    tail -5 "$WORK/pip_e.log"; note "- env: offline editable install failed (PYTHONPATH=. used)"
  fi
  tmo "$(cap 5)" $PY - "$DEV" > >(tee "$WORK/env_py.txt") 2>&1 <<'EOF' || rc=1
import sys, time
import torch
dev = sys.argv[1]
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, capability "
          f"{p.major}.{p.minor}, bf16 {torch.cuda.is_bf16_supported()}, cuDNN {torch.backends.cudnn.version()}")
elif dev == "cuda":
    sys.exit("CUDA is not available to torch")
import wct.linalg, models, train  # noqa: E401,F401  the project imports from the repository root
from wct import linalg
g = torch.Generator().manual_seed(0)
x = torch.randn(64, 16, 32, generator=g, dtype=torch.float64)
a = x @ x.mT / 32
a[0] = torch.eye(16, dtype=torch.float64)  # a repeated eigenvalue: gradients must stay finite
w = torch.randn(64, 16, 16, generator=g, dtype=torch.float64)
def run(d):
    m = a.to(d).requires_grad_(True)
    lam, v = linalg.eigh(m, backward="taylor")
    ((v @ torch.diag_embed(lam) @ v.mT) * w.to(d)).sum().backward()
    return lam.detach().cpu(), m.grad.cpu()
t = time.perf_counter(); lam_c, g_c = run("cpu"); t_c = time.perf_counter() - t
run(dev)
t = time.perf_counter(); lam_d, g_d = run(dev); t_d = time.perf_counter() - t
rel = lambda u, r: float((u - r).norm() / r.norm())  # noqa: E731
print(f"wct.linalg.eigh float64 (64, 16, 16) on {dev} vs cpu: eigenvalues rel err {rel(lam_d, lam_c):.2e}, "
      f"gradient rel err {rel(g_d, g_c):.2e}, finite {bool(torch.isfinite(g_d).all())}, "
      f"{t_d * 1e3:.1f} ms vs {t_c * 1e3:.1f} ms on cpu")
ok = rel(lam_d, lam_c) < 1e-10 and rel(g_d, g_c) < 1e-8 and bool(torch.isfinite(g_d).all())
print("eigh sanity:", "OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
EOF
  wait $! 2>/dev/null
  note "- env: $(grep -h -m1 '^torch ' "$WORK/env_py.txt"); $(grep -h -m1 '^GPU ' "$WORK/env_py.txt" || echo 'no GPU')"
  note "- env: $(grep -h -m1 '^wct.linalg.eigh' "$WORK/env_py.txt")"
  note "- env: $(grep -h -m1 '^eigh sanity' "$WORK/env_py.txt" || echo 'eigh sanity: did not run (see env.log)')"
  return $rc
}

# ----------------------------------------------------------------------------------------------- tests
pytest_line() {  # the result line of a pytest log ("3 passed, 1 skipped in 2.1s"), or why there is none
  grep -hE '(passed|failed|skipped|error|errors|deselected|no tests ran).* in [0-9.]+s' "$1" | tail -1 | tr -d '='
  grep -qE '(passed|failed|skipped|error|errors|deselected|no tests ran).* in [0-9.]+s' "$1" \
    || echo "no result line (timed out or crashed; see tests.log)"
}

stage_tests() {
  local rc=0 r files quick xd=() to=()
  # shellcheck disable=SC2207
  files=($(grep -rlE --include='*.py' 'mark\.gpu' tests wct | sort))
  $PY -c "import pytest_timeout" 2>/dev/null && to=(--timeout 120)
  echo "files with gpu-marked tests: ${files[*]}"
  tmo "$(cap 10)" $NICE $PY -m pytest -m gpu -q -p no:cacheprovider -rs "${to[@]}" "${files[@]}" 2>&1 \
    | tee "$WORK/gpu_tests.txt"
  r=${PIPESTATUS[0]}; [ $r -ne 0 ] && rc=$r
  note "- tests -m gpu (rc $r): $(pytest_line "$WORK/gpu_tests.txt")"
  if [ "$DRY" = 1 ]; then
    quick=(wct/linalg.py)  # plumbing only: the real quick suite takes minutes on 2 busy cores
  else
    quick=(tests/wct tests/models wct)
    $PY -c "import xdist" 2>/dev/null && xd=(-n 8)
  fi
  echo "quick suite (not slow, not browser): ${quick[*]} ${xd[*]}"
  tmo "$(cap 7)" $NICE $PY -m pytest -m "not slow and not browser" -q -p no:cacheprovider \
    --continue-on-collection-errors "${to[@]}" "${xd[@]}" "${quick[@]}" 2>&1 | tee "$WORK/quick_tests.txt"
  r=${PIPESTATUS[0]}; [ $r -ne 0 ] && rc=$r
  note "- tests quick suite (rc $r): $(pytest_line "$WORK/quick_tests.txt")"
  return $rc
}

# ----------------------------------------------------------------------------------------------- bench
# Benchmark arguments: the device run, and the dry run's tiny versions of the same calls.
if [ "$DRY" = 1 ]; then
  EIGH_MAIN=(--sizes 8 --batches 4 --reps 3 --cell-budget-s 0.2)
  EIGH_LARGE=(--sizes 12 --batches 2 --reps 3 --cell-budget-s 0.2); N_LARGE=1
  GEN_ARGS=(--sizes 64 --repeats 2 --threads 1)
else
  # n = 8..32 covers the WCT groups (demo 16, paper 32 channels per group); the target cell is n=32, B=512.
  # bench_eigh.py writes its JSON only at the end, so the larger n (whose batched float64 eigh on CUDA may
  # be a loop over the batch inside torch) run in a second call with their own time limit.
  EIGH_MAIN=(--sizes 8 16 32 --batches 1 64 512 --reps 10 --cell-budget-s 0.5)
  EIGH_LARGE=(--sizes 64 128 --batches 1 64 512 --reps 5 --cell-budget-s 0.5); N_LARGE=6
  GEN_ARGS=(--sizes 256 512 1024 --repeats 10)
fi

stage_bench() {
  local rc=0 r
  mkdir -p "$WORK/bench"
  tmo "$(cap 6)" $NICE $PY benchmarks/bench_eigh.py --devices "$DEV" "${EIGH_MAIN[@]}" --out "$WORK/bench" 2>&1 \
    | tee "$WORK/eigh.txt"
  r=${PIPESTATUS[0]}; [ $r -ne 0 ] && rc=$r
  note "- bench_eigh (rc $r):"
  grep -h ': .*target' "$WORK/eigh.txt" | sed 's/^ */  - /' >> "$NOTES"
  tmo "$(cap 3)" $NICE $PY benchmarks/bench_eigh.py --devices "$DEV" "${EIGH_LARGE[@]}" \
    --out "$WORK/bench/eigh_large" 2>&1 | tee "$WORK/eigh_large.txt"
  r=${PIPESTATUS[0]}; [ $r -ne 0 ] && rc=$r
  note "- bench_eigh larger n (rc $r): $(grep -c "^\[$DEV\]" "$WORK/eigh_large.txt") of $N_LARGE cells (eigh_large/ in bench.tar)"
  tmo "$(cap 8)" $NICE $PY benchmarks/bench_generator.py --device "$DEV" "${GEN_ARGS[@]}" --out "$WORK/bench" 2>&1 \
    | tee "$WORK/generator.txt"
  r=${PIPESTATUS[0]}; [ $r -ne 0 ] && rc=$r
  note "- bench_generator (rc $r):"
  grep -h 'ratio svd/gdwct' "$WORK/generator.txt" | sed 's/^/  - /' >> "$NOTES"
  (cd "$WORK/bench" && ls -R) && tar -cf "$OUT/bench.tar" -C "$WORK/bench" . || rc=1
  return $rc
}

# ----------------------------------------------------------------------------------------------- train
train_cmd() {  # train_cmd STYLE: the train.py command line of one style (printed and run)
  local s=$1
  local common=(--config "configs/demo-$s.yaml" --out "$WORK/runs" --device "$DEV" "data.root=$DATA/${s}2photo")
  if [ "$DRY" = 1 ]; then
    echo $PY train.py "${common[@]}" --image-size 64 --width 8 cpu_threads=1 data.num_workers=2 \
      train.sample_every=2 train.save_every=1000 train.print_every=1 train.style_bank_size=4 $TRAIN_ARGS
  else
    echo $PY train.py "${common[@]}" cpu_threads=null train.sample_every=200 train.save_every=1000 \
      train.print_every=100 $TRAIN_ARGS
  fi
}

train_done() {  # train_done STYLE PID: wait for one training; 124 (stopped by the budget) and 0 are fine
  local r
  wait "$2"; r=$?
  echo "$1: train.py rc $r (124 = stopped by SIGTERM at the end of its time, as planned)"
  tail -3 "$WORK/$1.train.log"
  if [ "$r" -ne 0 ] && [ "$r" -ne 124 ]; then
    rc=1; note "- train $1: train.py FAILED with rc $r (see train_stdout.log in $1.tar)"
  fi
}

stage_train() {
  local rc=0 s t t_each pids=() r n=0
  for s in $STYLES; do
    [ -d "$DATA/${s}2photo/trainA" ] || { echo "data missing: $DATA/${s}2photo/trainA (run benchmarks/device_stage.sh and carry .carry)"; return 1; }
    n=$((n + 1))
  done
  t=$(( $(left) - RESERVE ))
  if [ "$t" -lt 20 ]; then echo "only $t s left for training: skipped"; note "- train: skipped, only $t s left"; return 1; fi
  if [ "$MODE" = parallel ]; then t_each=$t; else t_each=$(( t / n )); fi
  echo "training $STYLES ($MODE): ${t_each} s each (SIGTERM at the end, KILL 45 s later)"
  for s in $STYLES; do
    echo "+ timeout --foreground -s TERM -k 45 $t_each $(train_cmd "$s")"
    # --foreground: TERM goes to train.py alone, not to its DataLoader workers (which would otherwise die
    # first and make the main process raise instead of saving).
    # shellcheck disable=SC2046
    $NICE timeout --foreground -s TERM -k 45 "$t_each" $(train_cmd "$s") > "$WORK/$s.train.log" 2>&1 &
    pids+=($!)
    [ "$MODE" = sequential ] && train_done "$s" "${pids[-1]}"
  done
  if [ "$MODE" = parallel ]; then
    local i=0
    for s in $STYLES; do train_done "$s" "${pids[$i]}"; i=$((i + 1)); done
  fi
  # exports in parallel (each loads a checkpoint and encodes the style bank), then one tar per style
  local et epids=() r
  et=$(left)
  [ "$et" -gt 90 ] && et=90; [ "$et" -lt 15 ] && et=15
  for s in $STYLES; do
    mkdir -p "$WORK/pack/$s"
    echo "+ train.py export --run $WORK/runs/demo-$s --out $WORK/pack/$s/$s.safetensors --fp16 (timeout $et s)"
    tmo "$et" $NICE $PY train.py export --run "$WORK/runs/demo-$s" --out "$WORK/pack/$s/$s.safetensors" \
      --fp16 > "$WORK/$s.export.log" 2>&1 &
    epids+=($!)
  done
  local i=0
  for s in $STYLES; do
    local run="$WORK/runs/demo-$s" pk="$WORK/pack/$s" png
    wait "${epids[$i]}"; r=$?; i=$((i + 1))
    echo "--- export $s: rc $r"; cat "$WORK/$s.export.log"
    [ "$r" -ne 0 ] && rc=1
    png=$(ls "$run"/samples/step_*.png 2>/dev/null | tail -1)
    [ -n "$png" ] && cp "$png" "$pk/$s-last-sample-$(basename "$png")"
    [ -f "$run/metrics.jsonl" ] && tail -n 200 "$run/metrics.jsonl" > "$pk/metrics_tail.jsonl"
    for f in summary.json config.yaml; do [ -f "$run/$f" ] && cp "$run/$f" "$pk/$f"; done
    cp "$WORK/$s.train.log" "$pk/train_stdout.log" 2>/dev/null
    tar -cf "$OUT/$s.tar" -C "$pk" . || rc=1
    ls -l "$pk"
    $PY - "$run/summary.json" "$pk/$s.safetensors" "$s" "$r" >> "$NOTES" <<'EOF'
import json, os, sys
path, export, name, r = sys.argv[1:]
try:
    s = json.load(open(path))
except OSError:
    print(f"- train {name}: no summary.json (did not start?)"); sys.exit()
ll = s.get("last_losses") or {}
alpha = ", ".join(f"{k} {v:.3f}" for k, v in ll.items() if k.startswith("alpha/"))
size = f"{os.path.getsize(export) / 1e6:.1f} MB" if os.path.exists(export) else "MISSING"
print(f"- train {name}: {s['status']} at step {s['steps_done']}, {s['sec_per_step_this_sitting']} s/step, "
      f"{s['hardware']}, amp {s['amp']}, non-finite {s['nonfinite_steps']}, gen/total {ll.get('gen/total')}, "
      f"dis/total {ll.get('dis/total')}, {alpha}; export {size} (rc {r})")
EOF
  done
  return $rc
}

echo "device_burst: budget $BUDGET s, stages $STAGES, device $DEV, OUT=$OUT, work $WORK, data $DATA"
run_stage env
run_stage tests
run_stage bench
run_stage train
write_summary
nfiles=$(find "$OUT" -type f | wc -l)
if [ "$nfiles" -gt 8 ]; then
  echo "warning: $nfiles files in \$OUT; the device tool returns at most 8" | tee -a "$OUT/summary.md"
fi
echo
cat "$OUT/summary.md"
rm -rf "$WORK"
fail=0
for s in "${DONE[@]}"; do [ "${RC[$s]}" -ne 0 ] && fail=1; done
exit $fail
