#!/usr/bin/env bash
# One prepared GPU run (at most 8 minutes on one H200) of the performance claims of issue 11:
#
#   1. resnet50 and vgg16 CAM at 224 px, batch 32: fp32 vs bf16 vs bf16 + channels-last; images/s of the
#      training step alone (b) and of fit.py (c), device busy % (NVML) during fit.py's timed epoch;
#   2. resnet50 bf16 + channels-last: loader (a), step (b), fit.py (c), bare loop (d) with and without the
#      decoded-image cache: data stall, Lightning overhead, evaluation share of an epoch;
#   3. an 8-trial study (tune.py, random sampler, no pruner, resnet50 bf16, 4 epochs x 20 batches) with
#      --workers 1 and --workers 4 on the one GPU: trials per hour.
#
# Everything runs on a CUB-like set that benchmarks/bench_throughput.py generates (JPEGs of about 500x375
# in the wsolevaluation layout). Results: $OUT/results.md (tables), $OUT/results.json, $OUT/log.txt (all
# output), $OUT/env.txt, $OUT/nvidia-smi.txt (utilization every second). A step that fails or runs out of
# its time slot is recorded as such and the script goes on.
#
# On the device machine (Python 3.12 with torch, lightning, numba, OpenCV; optuna, optuna-integration and
# jsonargparse carried as wheels: run `bash benchmarks/device_wheels.sh` here first, then call the device
# tool with carry [".whl"] and the command `bash benchmarks/device_check.sh`, timeout_s 540).
#
#   bash benchmarks/device_check.sh               # the GPU run
#   bash benchmarks/device_check.sh --cpu-smoke   # every step at toy sizes on CPU (small backbone), here
#
# Environment: OUT (results folder; default a new /tmp/device-check.*), PYTHON (default python3),
# DEVICE_CHECK_SECONDS (the whole run's budget; default 420 on GPU), DEVICE_CHECK_PARTS (a subset of
# "precision stall study"; default all three; the data are always generated).
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=gpu
[ "${1:-}" = "--cpu-smoke" ] && MODE=cpu
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d /tmp/device-check.XXXXXX)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/device-check-work.XXXXXX)
mkdir -p "$WORK/json"
LOG=$OUT/log.txt
: > "$LOG"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
START=$SECONDS
BUDGET=${DEVICE_CHECK_SECONDS:-$([ $MODE = gpu ] && echo 420 || echo 900)}
PARTS=" ${DEVICE_CHECK_PARTS:-precision stall study} "
want() { case "$PARTS" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

say() { echo "[$((SECONDS - START)) s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - (SECONDS - START))); }
# step NAME SECONDS CMD...: run CMD with a time limit (at most what is left), log its output and status.
step() {
    local name=$1 limit=$2; shift 2
    local remaining; remaining=$(left)
    [ "$limit" -gt "$remaining" ] && limit=$remaining
    if [ "$limit" -lt 10 ]; then
        say "SKIP $name: no time left"; echo "{\"step\": \"$name\", \"status\": \"skipped: no time left\"}" \
            > "$WORK/json/status-$name.json"; return 0
    fi
    say "START $name (limit ${limit} s)"
    local begin=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    local status=ok
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="timed out after ${limit} s"
    [ $rc -ne 0 ] && [ "$status" = ok ] && status="failed (exit $rc)"
    say "END $name: $status in $((SECONDS - begin)) s"
    echo "{\"step\": \"$name\", \"status\": \"$status\", \"seconds\": $((SECONDS - begin))}" \
        > "$WORK/json/status-$name.json"
}

# ---------------------------------------------------------------- environment
if ls .whl/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >> "$LOG" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
{
    echo "mode: $MODE; date: $(date -u +%FT%TZ); git: $(git rev-parse --short HEAD 2>/dev/null || echo n/a)"
    nproc; free -g 2>/dev/null | head -2
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -c "import sys, torch, lightning, numba, cv2; print(sys.version.split()[0], 'torch', torch.__version__, \
'lightning', lightning.__version__, 'numba', numba.__version__, 'cv2', cv2.__version__, 'cuda', torch.cuda.is_available())"
    "$PY" -c "import optuna, optuna_integration, jsonargparse; print('optuna', optuna.__version__, \
'jsonargparse', jsonargparse.__version__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" >> "$LOG"
if ! "$PY" -c "import optuna, optuna_integration, jsonargparse" 2>> "$LOG"; then
    say "optuna/optuna-integration/jsonargparse missing: carry .whl (bash benchmarks/device_wheels.sh)"
fi
SMI_PID=
if [ $MODE = gpu ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv -l 1 \
        > "$OUT/nvidia-smi.txt" 2>&1 &
    SMI_PID=$!
fi

# ------------------------------------------------------------------- settings
if [ $MODE = gpu ]; then
    DEVICE=cuda; ACCEL=gpu; BACKBONES="resnet50 vgg16"; STALL_BACKBONE=resnet50
    DATA="--num-train 2400 --num-val 400 --num-test 40"   # CUB's train:val ratio (6:1)
    SIZES="--image-size 224 --resize-size 256 --batch-size 32"
    PREC_STEPS=25; STALL_STEPS=40; PREC_LIMIT=70; STALL_LIMIT=110; REPEATS=2
    TRIALS=8; WORKERS_A=1; WORKERS_B=4; STUDY_LIMIT_A=130; STUDY_LIMIT_B=90
    TRIAL_ARGS="--trainer.max_epochs 4 --trainer.limit_train_batches 20 --trainer.limit_val_batches 4 \
--trainer.benchmark true --data.batch_size 32"
    STUDY_BACKBONE=resnet50; STUDY_PRECISION=bf16-mixed; FIT_SIZES=""
else
    DEVICE=cpu; ACCEL=cpu; BACKBONES="small"; STALL_BACKBONE=small
    DATA="--num-train 24 --num-val 8 --num-test 8"
    SIZES="--image-size 64 --resize-size 72 --batch-size 8"
    PREC_STEPS=2; STALL_STEPS=2; PREC_LIMIT=120; STALL_LIMIT=180; REPEATS=1
    TRIALS=2; WORKERS_A=1; WORKERS_B=2; STUDY_LIMIT_A=240; STUDY_LIMIT_B=240
    TRIAL_ARGS="--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 1 \
--data.batch_size 8"
    STUDY_BACKBONE=small; STUDY_PRECISION=32
    FIT_SIZES="--data.resize_size 72 --data.crop_size 64 --data.eval_size 64"
fi
BENCH="$PY benchmarks/bench_throughput.py --device $DEVICE --data-root $WORK/data $DATA $SIZES --repeats $REPEATS"

# -------------------------------------------------------------------- 0. data
step data 90 $BENCH --parts none --cache on
DATA_ROOT=$("$PY" -c "from pathlib import Path; print(sorted(Path('$WORK/data').glob('cub-like-*'))[0])" 2>> "$LOG")

# ------------------------------------------------- 1. precision and layout
want precision && for backbone in $BACKBONES; do
    for config in "32 false" "bf16-mixed false" "bf16-mixed true"; do
        set -- $config
        step "precision-$backbone-$1-cl$2" $PREC_LIMIT $BENCH --backbone "$backbone" --precision "$1" \
            --channels-last "$2" --parts step,fit --cache on --steps $PREC_STEPS \
            --json "$WORK/json/precision-$backbone-$1-cl$2.json"
    done
done

# ------------------------------------------------ 2. data stall, cache on/off
want stall && step "stall-$STALL_BACKBONE" $STALL_LIMIT $BENCH --backbone $STALL_BACKBONE \
    --precision $([ $MODE = gpu ] && echo bf16-mixed || echo 32) --channels-last true \
    --parts loader,step,fit,bare --cache both --steps $STALL_STEPS --json "$WORK/json/stall-$STALL_BACKBONE.json"

# ------------------------------------------ 3. concurrent trials on one device
# tune.py --workers N is issue 11 item 3 (another work package): without it only the one-worker study runs.
HAS_WORKERS=no
"$PY" scripts/tune.py --help 2> /dev/null | grep -q -- "--workers" && HAS_WORKERS=yes
want study && for workers in $WORKERS_A $WORKERS_B; do
    if [ $HAS_WORKERS = no ] && [ "$workers" != 1 ]; then
        say "SKIP study-workers-$workers: scripts/tune.py has no --workers yet"
        echo "{\"step\": \"study-workers-$workers\", \"status\": \"skipped: tune.py has no --workers\"}" \
            > "$WORK/json/status-study-workers-$workers.json"
        continue
    fi
    WORKERS_FLAG=$([ $HAS_WORKERS = yes ] && echo "--workers $workers")
    limit=$([ "$workers" = "$WORKERS_A" ] && echo $STUDY_LIMIT_A || echo $STUDY_LIMIT_B)
    study_dir=$WORK/study-w$workers
    begin=$SECONDS
    step "study-workers-$workers" "$limit" "$PY" scripts/tune.py $WORKERS_FLAG --n-trials $TRIALS \
        --study-dir "$study_dir" --sampler random --pruner none --no-plots --seed 0 \
        --data.dataset_name CUB --data.data_root "$DATA_ROOT" --data.cache on $FIT_SIZES \
        --model.backbone $STUDY_BACKBONE --trainer.accelerator $ACCEL --trainer.devices 1 \
        --trainer.precision $STUDY_PRECISION $TRIAL_ARGS
    "$PY" - "$study_dir" "$workers" "$((SECONDS - begin))" "$WORK/json/study-w$workers.json" >> "$LOG" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
study_dir, workers, seconds, out = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
result = {"workers": workers, "wall_seconds": seconds}
try:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{study_dir / 'optuna.db'}"
    names = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=names[0], storage=storage).trials
    states = [t.state.name for t in trials]
    finished = [t for t in trials if t.datetime_complete and t.state.name in ("COMPLETE", "PRUNED")]
    result.update(states={s: states.count(s) for s in set(states)}, finished=len(finished),
                  trials_per_hour=3600 * len(finished) / seconds if seconds else None)
    if finished:  # most trials running at the same time
        events = sorted([(t.datetime_start, 1) for t in finished] + [(t.datetime_complete, -1) for t in finished])
        level = peak = 0
        for _, delta in events:
            level += delta
            peak = max(peak, level)
        result["max_concurrent"] = peak
except Exception as error:
    result["error"] = f"{type(error).__name__}: {error}"
Path(out).write_text(json.dumps(result))
print(json.dumps(result))
EOF
done

# ------------------------------------------------------------------ results
[ -n "$SMI_PID" ] && kill "$SMI_PID" 2> /dev/null
"$PY" - "$WORK/json" "$OUT" "$MODE" >> "$LOG" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
folder, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
runs = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
lines = [f"# device_check.sh ({mode})", ""]
env = (out / "env.txt").read_text() if (out / "env.txt").exists() else ""
lines += ["```", env.strip(), "```", ""]
fmt = lambda v, spec=".0f": "n/a" if v is None else format(v, spec)
prec = [(k, v) for k, v in runs.items() if k.startswith("precision-")]
if prec:
    lines += ["## Precision and layout (224 px, batch 32)" if mode == "gpu" else "## Precision and layout", "",
              "| backbone | precision | step (b) img/s | fit (c) img/s | busy % in (c) | (c)/(b) |", "|---|---|---|---|---|---|"]
    for key, run in prec:
        rows = {r["part"]: r for r in run["rows"]}
        b, c = rows.get("b step"), rows.get("c fit")
        lines.append(f"| {run['config']['backbone']} | {run['config']['precision']} | {fmt(b and b['img_s'])} | "
                     f"{fmt(c and c['img_s'])} | {fmt(c and c['busy'])} | "
                     f"{fmt(b and c and c['img_s'] / b['img_s'], '.2f')} |")
    lines.append("")
for key, run in runs.items():
    if not key.startswith("stall-"):
        continue
    lines += [f"## Data stall, Lightning overhead, evaluation ({run['config']['backbone']}, {run['config']['precision']})",
              "", f"cache built in {fmt(run.get('cache_build_seconds'), '.1f')} s", "",
              "| part | cache | workers | img/s | busy % |", "|---|---|---|---|---|"]
    lines += [f"| {r['part']} | {r['cache']} | {r['workers']} | {r['img_s']:.0f} | {fmt(r['busy'])} |" for r in run["rows"]]
    lines += ["", "| cache | Lightning overhead | data stall | val epoch s | train epoch s | evaluation share |",
              "|---|---|---|---|---|---|"]
    for s in run["summary"]:
        pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"
        lines.append(f"| {s['cache']} | {pct(s['lightning_overhead'])} | {pct(s['data_stall'])} | "
                     f"{s['val_seconds']:.2f} | {s['train_epoch_seconds']:.1f} | {pct(s['eval_share'])} |")
    lines.append("")
studies = [v for k, v in runs.items() if k.startswith("study-w")]
if studies:
    lines += ["## Concurrent trials on one device", "", "| --workers | wall s | finished trials | trials/hour | "
              "most at once | states |", "|---|---|---|---|---|---|"]
    for s in sorted(studies, key=lambda s: s["workers"]):
        lines.append(f"| {s['workers']} | {s['wall_seconds']:.0f} | {s.get('finished', 'n/a')} | "
                     f"{fmt(s.get('trials_per_hour'))} | {s.get('max_concurrent', 'n/a')} | "
                     f"{s.get('states', s.get('error', ''))} |")
    lines.append("")
lines += ["## Steps", "", "| step | status | seconds |", "|---|---|---|"]
lines += [f"| {v['step']} | {v['status']} | {v.get('seconds', '')} |" for k, v in runs.items() if k.startswith("status-")]
(out / "results.md").write_text("\n".join(lines) + "\n")
(out / "results.json").write_text(json.dumps(runs, indent=1, default=str))
print("\n".join(lines))
EOF
say "done in $((SECONDS - START)) s; results in $OUT (results.md, results.json, log.txt)"
rm -rf "$WORK"
