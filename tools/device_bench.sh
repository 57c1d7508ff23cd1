#!/usr/bin/env bash
# The GPU benchmark for a lent GPU machine (no network there), prepared and dry-run on a CPU here.
#
#   bash tools/device_bench.sh prepare [AUDIO_DIR]
#       here, with network: the wheels the GPU image lacks (soundfile, cffi, pycparser, kaldi-native-io, tqdm,
#       nvidia-ml-py; CPython 3.10-3.13) and the clips to cut the speed set from (AUDIO_DIR, default
#       ../shared/reference/audio, else tools/make_test_set.py's 17 clips) into .gpu_bench/ (git-ignored
#       through .git/info/exclude), the one folder a call carries
#   bash tools/device_bench.sh run OUT [MINUTES] [DEVICE] [VERSIONS] [BUDGET_S]
#       there: s3tok from the checkout (PYTHONPATH, no install; the wheels go to a folder of the work dir when
#       an import is missing), official-size random-weight models, a MINUTES-long (default 120) set of 2-8 s
#       clips, then per version (default v2_25hz) in three phases, the least important last:
#         1. exact_V.json   onnxruntime fp32 batch 1 on the CPU against s3tok fp32 and bf16 on DEVICE, and fp32
#                           with CPU log-mels carried to DEVICE (front end vs model differences), the 17
#                           reference clips (token misses; one timed pass, tools/bench.py --runs 1)
#         2. tokenize_V.json  one `s3tok tokenize` process per dtype (fp32, bf16) over the clip set, as a user
#                           runs it: its wall from start to exit, and the tokenize stage's own wall (from its log
#                           line) with the first-pass costs (cuFFT plans per length, cuDNN/cuBLAS plans per
#                           shape, allocator growth), next to the best pass of phase 2's speed run
#            speed_V.json   s3tok fp32 and bf16 on DEVICE over the clip set, best of 2 passes after a warm-up
#                           clip (tools/bench.py --runs 2: RTF, GPU utilisation and memory)
#         3. speed4x_V.json s3tok bf16 again with 4x the GPU default frames per forward pass (192000)
#         4. cpu_ab_V.json  the host's own CPU held to 2 cores (taskset -c 0,1), first version only and only where
#                           prepare left .gpu_bench/base: tools/bench_ab.py, s3tok before (AB_BASE, default
#                           5a16927, the last commit before issue 20's CPU work) and after, each process against
#                           onnxruntime batch 1 on a 3-minute set of 2-8 s clips, 2 rounds (issue 20's "no
#                           regression on AMX": the GPU hosts lent so far are Xeons with AMX)
#       and the tables exact.md, tokenize.md, speed.md, speed4x.md (tools/bench_report.py), cpu_ab.md.
#   bash tools/device_bench.sh dry-run OUT
#       here, on a CPU, in about a minute, no network, no .gpu_bench, no ../shared: the same steps, file layout
#       and step limits (scaled to 50 %) with tools/make_test_set.py's 17 clips, a 2-minute clip set and a
#       width-128 random v2 model. tests/test_device_bench.py runs it.
#
# Every step runs under `timeout` (its limit below); a step that fails or times out ("timed out after N s")
# is counted and logged, and the next step goes on. The call has a budget (BUDGET_S, default 330 s): a step
# whose estimate no longer fits is skipped with a log line, a step that runs gets at most what is left as its
# limit, and 30 s are kept for the tables. The exit status is the number of failed steps.
#
# What comes back: three files in OUT (the device tool returns at most 8, 2 folders deep):
#   device_bench.tar.gz   everything: the JSON results, the markdown tables, steps.tsv (step, status, seconds,
#                         limit, estimate), logs/STEP.log of every step, device_bench.log, device_bench.md
#                         (re-packed after every step, so a call killed from outside still returns its results)
#   device_bench.log      the log: what each step ran, its output, how long it took
#   device_bench.md       the summary: the steps table, then the tables
#
# With the device tool (carry [".gpu_bench"]); run `prepare` here first:
#   call 1, v2 only (about 4 min by the estimate below, at most 5.5 min by its budget; with the machine's
#   start of a couple of minutes it leaves room for a rerun within the 15 minutes of device time):
#     command: bash tools/device_bench.sh run "$OUT" 120 cuda v2_25hz 330    timeout_s: 360
#   call 2, optional, the other versions, right after call 1 while the machine is warm (wheels, clip set and
#   conversion cache are reused; a fresh start costs a couple of minutes more) and only when status says
#   budget_left_s >= 480; BUDGET_S = min(420, budget_left_s - 60), timeout_s = BUDGET_S + 30. Phase 1
#   (exactness of all three) fits, phases 2-3 go as far as the budget allows, v3 first:
#     command: bash tools/device_bench.sh run "$OUT" 120 cuda "v3_25hz v1_25hz v1" 420    timeout_s: 450
#   then give_back.
#
# Cost estimates (seconds on the GPU machine; "est" in the plan below, limits about 3x). How estimated: on
# this project's 2-core CPU, exporting the official-size v2 model took 8 s, its first load 7 s (conversion,
# then cached: 0.5 s), a Python + torch start 1.5 s, and onnxruntime v2 runs 31 audio s/s on 2 threads (the
# 17 clips are 179 s of audio: ~1.5 s on 16 cores); a 120-minute clip set (7,200 s of audio, ~1,440 clips)
# at the H200's fp32 rate with TF32 off (~60 TFLOP/s, 30-50 % reached) and v2's 7.8 GFLOP per audio second
# is 2-4 s per fp32 pass; bf16 is bound by decoding and log-mel (16 threads) at a similar few seconds; each
# bench.py engine is a fresh process (start, model load, CUDA context ~5-10 s). So, call 1:
#   wheels + env check 10, clip set 15, export 10, exact 40, tokenize 2 x 25, speed 60, speed4x 30,
#   tables 10: ~225 s (v3 has twice v2's blocks: about 1.5x in exact and speed). Call 2 (warm): env 5,
#   three exports 35, exact 40 + 40 + 60, then phase 2 at 110 s a version (v3 ~150): a 420 s budget reaches
#   all of v3 and v1_25hz's one-pass rows; the rest is skipped with a log line.
# Checked on an H200 (16-core Xeon host, 2026-12-04, two calls as above, nothing skipped): call 1 took 134 s
# (env 8, clip set 7, export 9, exact 41, tokenize 9 + 9, speed 30, speed4x 19); call 2 350 s of its 420 (exports
# 9-14, exact 35-44, tokenize 8-10, speed 27-34, speed4x 16-17). The steps' estimates below are those seconds,
# rounded up; steps.tsv of each call has them again. Second H200 session (2026-12-04, source 929fd62): call 1
# ran phases 1-3 in 141 s as before, then phase 4 on a 5-minute set timed out at the 160 s its budget left
# (45 s a process, 4 processes): now a 3-minute set, estimated 130 s.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARRY=$ROOT/.gpu_bench
AB_BASE=${AB_BASE:-5a16927}  # phase 4's "before": prepare exports it into .gpu_bench/base (AB_TREE)
RESERVE=30         # seconds of the budget kept for the tables and the summary
DRY_PCT=50         # the dry run's limits and budget, in % of the GPU ones

# ---------------------------------------------------------------- step machinery
# State (set by init): OUT, WORK, RES (the archive's contents), LOG, BUDGET (s), PCT (scale of limits and
# budget, %), T0 (ms), FAILED, SKIPPED, ABORT (a reason to skip every remaining step).

ms_now() { date +%s%N | cut -c1-13; }
seconds() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }  # milliseconds as s.d
elapsed_s() { echo $((($(ms_now) - T0) / 1000)); }
scaled() { local s=$(($1 * PCT / 100)); echo $((s > 0 ? s : 1)); }
log() { printf '%s device_bench: %s\n' "$(date '+%F %T')" "$*" | tee -a "$LOG"; }
shown() {  # a command for the log, an inline script as <script>
    local a out=()
    for a in "$@"; do [[ $a == *$'\n'* ]] && a="<script>"; out+=("$a"); done
    echo "${out[*]}"
}

init() {  # OUT BUDGET_S: a fresh results folder, the clock started
    PCT=${PCT:-100}
    BUDGET=$(scaled "$2")
    WORK=${WORK:-${S3TOK_BENCH_WORK:-${TMPDIR:-/tmp}/s3tok_device_bench}}
    mkdir -p "$1" "$WORK" || exit 2
    OUT=$(cd "$1" && pwd) WORK=$(cd "$WORK" && pwd)  # absolute: the plan runs from the checkout's root
    RES=$WORK/result LOG=$OUT/device_bench.log FAILED=0 SKIPPED=0 ABORT=
    rm -rf "$RES" "$OUT"/device_bench.*
    mkdir -p "$RES/logs"
    printf 'step\tstatus\tseconds\tlimit_s\testimate_s\n' > "$RES/steps.tsv"
    T0=$(ms_now)
}

pack() {  # the archive, now: re-made after every step
    cp "$LOG" "$RES/device_bench.log" 2> /dev/null
    tar -czf "$OUT/device_bench.tar.gz" -C "$RES" . 2>> "$LOG" || log "packing the archive failed"
}

skip() {  # NAME REASON
    SKIPPED=$((SKIPPED + 1))
    log "$1: SKIPPED: $2"
    printf '%s\tskipped\t-\t-\t-\n' "$1" >> "$RES/steps.tsv"
}

run_step() {  # NAME LIMIT_S EST_S CMD...: run CMD under `timeout`, log what it took, count a failure
    local name=$1 limit=$2 est=$3 start rc took status
    shift 3
    log "$name: start (limit $limit s): $(shown "$@")"
    start=$(ms_now)
    timeout --kill-after=10 "$limit" "$@" < /dev/null 2>&1 | tee "$RES/logs/$name.log" >> "$LOG"
    rc=${PIPESTATUS[0]}
    took=$(($(ms_now) - start))
    if [ "$rc" -eq 0 ]; then
        status=ok
        log "$name: ok in $(seconds "$took") s"
    elif [ "$rc" -eq 124 ] || { [ "$rc" -eq 137 ] && [ "$took" -ge $((limit * 1000)) ]; }; then
        status=timeout FAILED=$((FAILED + 1))
        log "$name: FAILED: timed out after $limit s"
    else
        status="exit $rc" FAILED=$((FAILED + 1))
        log "$name: FAILED (exit $rc) after $(seconds "$took") s"
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$(seconds "$took")" "$limit" "$est" >> "$RES/steps.tsv"
    pack
    return "$rc"
}

step() {  # NAME EST_S LIMIT_S CMD...: a measuring step, within the budget less the reserve
    local name=$1 est limit left
    est=$(scaled "$2") limit=$(scaled "$3")
    shift 3
    [ -z "$ABORT" ] || { skip "$name" "$ABORT"; return 1; }
    left=$((BUDGET - $(scaled $RESERVE) - $(elapsed_s)))
    if [ "$est" -gt "$left" ]; then
        skip "$name" "over the budget (about $est s needed, $left s left of $BUDGET s)"
        return 1
    fi
    run_step "$name" $((limit < left ? limit : left)) "$est" "$@"
}

final_step() {  # NAME LIMIT_S CMD...: a table, in what is left of the whole budget (at least 5 s)
    local name=$1 limit left
    limit=$(scaled "$2")
    shift 2
    left=$((BUDGET - $(elapsed_s)))
    [ "$left" -ge 5 ] || left=5
    run_step "$name" $((limit < left ? limit : left)) 1 "$@"
}

need() {  # PATH NAME: true when PATH exists, else NAME is skipped
    [ -e "$1" ] && return 0
    skip "$2" "${ABORT:-needs $1 (its step failed or was skipped)}"
    return 1
}

# ---------------------------------------------------------------- the tables

# tokenize_V.json and tokenize.md: the one-pass rows of phase 2 next to the best pass of speed_V.json
read -r -d '' TOKENIZE_REPORT << 'EOF'
import json, re, sys
from pathlib import Path

res, versions = Path(sys.argv[1]), sys.argv[2].split()
steps = {}
for line in (res / "steps.tsv").read_text().splitlines()[1:]:
    name, status, secs = line.split("\t")[:3]
    steps[name] = (status, float(secs))
line_re = re.compile(r"([0-9.]+) s of audio in ([0-9.]+) s: ([0-9.]+) audio s/s")
out = ["| model | dtype | process s (start to exit) | start-up + load s | one pass s | audio s/s, one pass "
       "| best pass s | audio s/s, best | first-pass extra s |", "|---|---|---|---|---|---|---|---|---|"]
found = 0
for v in versions:
    speed = res / f"speed_{v}.json"
    best = {r["engine"]: r for r in json.loads(speed.read_text())["rows"]} if speed.exists() else {}
    rows = []
    for dtype in ("fp32", "bf16"):
        name = f"tokenize-{v}-{dtype}"
        if steps.get(name, ("",))[0] != "ok":
            continue
        got = line_re.findall((res / "logs" / f"{name}.log").read_text())
        if not got:
            print(f"{name}: no 's of audio in' line in its log", file=sys.stderr)
            continue
        audio, wall, rtf = map(float, got[-1])
        wall = audio / rtf if rtf > 0 else wall  # the log line's wall has one decimal, its speed more digits
        b = best.get(f"s3tok-{dtype}")
        row = {"dtype": dtype, "process_wall_s": steps[name][1], "tokenize_wall_s": round(wall, 3),
               "audio_seconds": audio, "rtf_one_pass": rtf, "startup_s": round(steps[name][1] - wall, 2),
               "best_wall_s": b and b["wall_s"], "rtf_best": b and b["rtf"],
               "first_pass_extra_s": b and round(wall - b["wall_s"], 2)}
        rows.append(row)
        f = lambda x, p=1: "-" if x is None else f"{x:.{p}f}"
        out.append(f"| {v} | {dtype} | {f(row['process_wall_s'])} | {f(row['startup_s'])} | {f(wall, 2)} | {f(rtf)} "
                   f"| {f(row['best_wall_s'], 2)} | {f(row['rtf_best'])} | {f(row['first_pass_extra_s'], 2)} |")
    if rows:
        found += 1
        (res / f"tokenize_{v}.json").write_text(json.dumps({"version": v, "rows": rows}, indent=1) + "\n")
head = ("One `s3tok tokenize` process per row over the clip set, as a user runs it: the process's wall from start "
        "to exit, the tokenize stage's own wall (its log line; first-pass costs included), and the best pass of "
        "tools/bench.py --runs 2 over the same set (after a one-clip warm-up); first-pass extra = one pass - best.")
(res / "tokenize.md").write_text(head + "\n\n" + "\n".join(out) + "\n")
sys.exit(0 if found else 1)
EOF

# cpu_ab.md: each version's tools/bench_ab.py table under a heading (appended)
read -r -d '' AB_REPORT << 'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
with open(sys.argv[3], "a") as f:
    f.write(f"speech_tokenizer_{sys.argv[2]}, `{result['info']['command']}` on {result['info']['machine']}:\n\n")
    f.write("\n".join(result["table"]) + "\n\n")
EOF

# the environment: versions, the device, the CPU (fails when an import or the device is missing)
read -r -d '' ENV_CHECK << 'EOF'
import os, platform, sys
import kaldi_native_io, numpy, onnx, onnxruntime, soundfile, torch, tqdm
from s3tok.version import __version__
print("python", platform.python_version(), "| torch", torch.__version__, "| numpy", numpy.__version__, "| onnx",
      onnx.__version__, "| onnxruntime", onnxruntime.__version__, "| s3tok", __version__, "|", os.cpu_count(), "CPUs")
device = torch.device(sys.argv[1])
if device.type == "cuda":
    if not torch.cuda.is_available():
        sys.exit("CUDA is not available")
    print(torch.cuda.get_device_name(device), "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version())
EOF

tables() {  # VERSIONS: the markdown of each phase, then device_bench.md
    local kind files v
    for kind in exact speed speed4x; do
        files=()
        for v in $1; do [ -f "$RES/${kind}_$v.json" ] && files+=("$RES/${kind}_$v.json"); done
        [ "${#files[@]}" -gt 0 ] && final_step "table-$kind" 30 python3 tools/bench_report.py "${files[@]}" \
            --out "$RES/$kind.md"
    done
    for v in $1; do
        [ -f "$RES/cpu_ab_$v.json" ] && final_step "table-cpu-ab-$v" 30 python3 -c "$AB_REPORT" "$RES/cpu_ab_$v.json" \
            "$v" "$RES/cpu_ab.md"
    done
    if grep -q "^tokenize-.*	ok	" "$RES/steps.tsv"; then
        final_step table-tokenize 30 python3 -c "$TOKENIZE_REPORT" "$RES" "$1"
    fi
}

summary() {  # ARGS: device_bench.md (in OUT and in the archive)
    local md=$RES/device_bench.md kind src
    src=$(git -C "$ROOT" describe --always --dirty 2> /dev/null || echo '?')
    {
        echo "# tools/device_bench.sh $*"
        echo
        echo "$(date '+%F %T'), $(hostname), source $src; $FAILED failed and $SKIPPED skipped step(s);" \
            "$(elapsed_s) s of a $BUDGET s budget."
        echo
        echo "| step | status | seconds | limit s | estimate s |"
        echo "|---|---|---|---|---|"
        tail -n +2 "$RES/steps.tsv" | sed 's/\t/ | /g; s/^/| /; s/$/ |/'
        for kind in exact tokenize speed speed4x cpu_ab; do
            [ -f "$RES/$kind.md" ] && { echo; echo "## $kind"; echo; cat "$RES/$kind.md"; }
        done
    } > "$md"
    cp "$md" "$OUT/device_bench.md"
}

finish() {  # VERSIONS ARGS...: the tables, the summary, the archive; returns the number of failures
    local versions=$1
    shift
    tables "$versions"
    log "done in $(elapsed_s) s: $FAILED failed, $SKIPPED skipped step(s); results in $OUT/device_bench.tar.gz"
    summary "$@"
    pack
    return $((FAILED < 100 ? FAILED : 100))
}

# ---------------------------------------------------------------- the plan

# The call: setup, then the three phases over VERSIONS. Inputs besides the arguments (the dry run sets them):
# AUDIO (clips to cut from and the exactness set), MODEL_ARGS (export-onnx size options), THREADS, PCT, WORK.
run() {
    local out=${1:?usage: tools/device_bench.sh run OUT [MINUTES] [DEVICE] [VERSIONS] [BUDGET_S]}
    local minutes=${2:-120} device=${3:-cuda} versions=${4:-v2_25hz} budget=${5:-330}
    local audio=${AUDIO:-$CARRY/audio} threads=${THREADS:-$(nproc)} model_args=${MODEL_ARGS:-}
    local clips v dtype model tree ab_clips
    init "$out" "$budget"
    log "run $out minutes=$minutes device=$device versions='$versions' budget=$BUDGET s (limits at $PCT %)" \
        "threads=$threads work=$WORK"
    cd "$ROOT" || return 2
    # s3tok from this checkout; the wheels of .gpu_bench in WORK/site, installed by the first call
    export S3TOK_HOME=$WORK/home PYTHONPATH=$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}
    if ! python3 -c "import soundfile, kaldi_native_io, tqdm" 2> /dev/null; then
        local wheels
        wheels=$CARRY/wheels/$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
        if [ -d "$wheels" ]; then
            step wheels 5 120 python3 -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" \
                "$wheels"/*.whl
        else
            log "no $wheels: run 'tools/device_bench.sh prepare' where there is network"
        fi
    fi
    step env 8 60 python3 -c "$ENV_CHECK" "$device" || ABORT="the environment check failed"
    [ -n "$ABORT" ] || ! command -v nvidia-smi > /dev/null || timeout 20 nvidia-smi >> "$LOG" 2>&1
    [ -d "$audio" ] || { log "no clips at $audio: run 'tools/device_bench.sh prepare'"; ABORT="no clips"; }

    clips=$WORK/clips_${minutes}m  # kept for a second call on the same machine
    if [ ! -f "$clips/.done" ]; then
        rm -rf "$clips"
        step clip-set 15 120 python3 tools/make_clip_set.py --minutes "$minutes" --out "$clips" "$audio" \
            && touch "$clips/.done"
    fi

    # 1. exactness of every version
    mkdir -p "$WORK/models"
    for v in $versions; do
        model=$WORK/models/$v.onnx
        if [ ! -f "$model" ]; then  # written under another name first: a killed export leaves no model
            step "export-$v" 10 120 python3 -m s3tok.cli export-onnx --random-init --version "speech_tokenizer_$v" \
                $model_args "$model.part.onnx" && mv "$model.part.onnx" "$model"
        fi
        need "$model" "exact-$v" && step "exact-$v" 40 150 python3 tools/bench.py --model "$model" \
            --wav_dir "$audio" --threads "$threads" --device "$device" --runs 1 \
            --engines ort-N,s3tok-fp32,s3tok-fp32-cpumel,s3tok-bf16 --json "$RES/exact_$v.json"
    done
    # 2. speed: one process as s3tok tokenize runs it, per dtype; then the best of 2 passes. Batch size 128
    # with the GPU default of 48000 frames per pass (about 96 clips of 5 s): the frame budget decides.
    for v in $versions; do
        model=$WORK/models/$v.onnx
        for dtype in fp32 bf16; do
            need "$model" "tokenize-$v-$dtype" && need "$clips/.done" "tokenize-$v-$dtype" \
                && step "tokenize-$v-$dtype" 12 120 python3 -m s3tok.cli tokenize --wav_dir "$clips" \
                    --model "$model" --output_dir "$WORK/tokens/$v-$dtype" --overwrite --no_progress \
                    --device "$device" --dtype "$([ "$dtype" = fp32 ] && echo float32 || echo bfloat16)" \
                    --batch_size 128 --num_workers "$threads" --num_threads "$threads"
        done
        need "$model" "speed-$v" && need "$clips/.done" "speed-$v" && step "speed-$v" 40 180 \
            python3 tools/bench.py --model "$model" --wav_dir "$clips" --threads "$threads" --device "$device" \
            --runs 2 --batch_size 128 --num_workers "$threads" --engines s3tok-fp32,s3tok-bf16 \
            --json "$RES/speed_$v.json"
    done
    # 3. the batch policy: bf16 again with 4x the frames per forward pass
    for v in $versions; do
        model=$WORK/models/$v.onnx
        need "$model" "speed4x-$v" && need "$clips/.done" "speed4x-$v" && step "speed4x-$v" 20 120 \
            python3 tools/bench.py --model "$model" --wav_dir "$clips" --threads "$threads" --device "$device" \
            --runs 2 --batch_size 512 --num_workers "$threads" --max_frames_per_batch 192000 \
            --engines s3tok-bf16 --json "$RES/speed4x_$v.json"
    done
    # 4. before and after on the host's CPU, two cores, the first version (where prepare left a base tree)
    v=${versions%% *} tree=${AB_TREE:-$CARRY/base}
    model=$WORK/models/$v.onnx ab_clips=$WORK/clips_3m
    if [ ! -d "$tree/s3tok" ]; then
        log "cpu-ab-$v: not run: no s3tok tree at $tree ('tools/device_bench.sh prepare' exports one)"
    elif need "$model" "cpu-ab-$v"; then
        if [ ! -f "$ab_clips/.done" ]; then
            rm -rf "$ab_clips"
            step clip-set-3m 5 60 python3 tools/make_clip_set.py --minutes 3 --out "$ab_clips" "$audio" \
                && touch "$ab_clips/.done"
        fi
        need "$ab_clips/.done" "cpu-ab-$v" && step "cpu-ab-$v" 130 300 python3 tools/bench_ab.py \
            --base "$tree" --prefix "taskset -c 0,1" --threads 2 --rounds 2 --model "$model" \
            --wav_dir "$ab_clips" --json "$RES/cpu_ab_$v.json"
    fi
    finish "$versions" run "$@"
}

# The same call on this CPU: make_test_set's clips, a small model, a 2-minute clip set, limits at DRY_PCT %.
dry_run() {
    local out=${1:?usage: tools/device_bench.sh dry-run OUT} rc own=
    if [ -z "${S3TOK_BENCH_WORK:-}" ]; then
        own=$(mktemp -d "${TMPDIR:-/tmp}/s3tok_device_bench_dry.XXXXXX") || return 2
    fi
    WORK=${S3TOK_BENCH_WORK:-$own}
    mkdir -p "$WORK" || return 2
    echo "dry run: tools/make_test_set.py into $WORK/set"
    python3 "$ROOT/tools/make_test_set.py" "$WORK/set" > "$WORK/make_test_set.log" 2>&1 \
        || { tail -20 "$WORK/make_test_set.log"; return 2; }
    mkdir -p "$WORK/base" && cp -r "$ROOT/s3tok" "$ROOT/tools" "$WORK/base/"  # phase 4's "before": this tree
    echo "this checkout (dry run)" > "$WORK/base/SOURCE"
    AUDIO=$WORK/set/audio MODEL_ARGS="--width 128 --heads 2 --depth 2" PCT=$DRY_PCT THREADS=${THREADS:-$(nproc)}
    AB_TREE=$WORK/base
    run "$out" 2 cpu v2_25hz 330
    rc=$?
    [ -z "$own" ] || rm -rf "$own"
    return "$rc"
}

prepare() {
    local audio=${1:-$ROOT/../shared/reference/audio} py exclude
    cd "$ROOT" || return 1
    mkdir -p "$CARRY/audio"
    exclude=$(git rev-parse --git-path info/exclude) || return 1  # git-ignored: the device tool carries it
    mkdir -p "$(dirname "$exclude")"
    grep -qx "/.gpu_bench/" "$exclude" 2> /dev/null || echo "/.gpu_bench/" >> "$exclude"
    for py in 3.10 3.11 3.12 3.13; do  # the GPU image's Python is not known here: one folder per version
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$CARRY/wheels/cp${py/./}" \
            soundfile cffi pycparser kaldi-native-io tqdm nvidia-ml-py || return 1
    done
    if [ ! -d "$audio" ]; then
        echo "no $audio: the clips of tools/make_test_set.py instead"
        python3 tools/make_test_set.py "$CARRY/test_set" > /dev/null 2>&1 || return 1
        audio=$CARRY/test_set/audio
    fi
    cp "$audio"/* "$CARRY/audio/" || return 1
    rm -rf "$CARRY/base" && mkdir -p "$CARRY/base"  # phase 4's "before" (no git there: a plain tree)
    git -C "$ROOT" archive "$AB_BASE" s3tok tools | tar -x -C "$CARRY/base" || return 1
    git -C "$ROOT" rev-parse --short "$AB_BASE" > "$CARRY/base/SOURCE"
    rm -rf "$CARRY/test_set"
    du -sh "$CARRY"
}

main() {
    case "${1:-}" in
        prepare) shift; prepare "$@" ;;
        run) shift; run "$@" ;;
        dry-run) shift; dry_run "$@" ;;
        *) echo "usage: tools/device_bench.sh prepare [AUDIO_DIR] | run OUT [MINUTES] [DEVICE] [VERSIONS] [BUDGET_S]" \
               "| dry-run OUT" >&2
           return 2 ;;
    esac
}

# sourced (tests/test_device_bench.py uses the step machinery alone): define only
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
    exit $?
fi
