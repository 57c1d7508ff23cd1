#!/usr/bin/env bash
# The GPU benchmark in one call of a lent GPU machine (no network there), prepared and tried on a CPU here.
#
#   bash tools/device_bench.sh prepare
#       here: the wheels the GPU image lacks (soundfile, cffi, pycparser, kaldi-native-io; setuptools and
#       wheel to install s3tok offline; CPython 3.10-3.13)
#       and the 17 reference clips, into .gpu_bench/ (git-ignored), the one folder the call carries
#   bash tools/device_bench.sh run OUT [MINUTES] [DEVICE] [VERSIONS]
#       there: install s3tok offline, export official-size random-weight models, cut a MINUTES-long
#       (default 600, AISHELL test size) set of 2-8 s clips, then for each version (default: all four)
#         exact_V.json  onnxruntime batch 1 on the CPU against s3tok fp32 and bf16 on DEVICE, 17 clips
#         speed_V.json  s3tok fp32 and bf16 on DEVICE over the MINUTES-long set (RTF, GPU utilisation)
#         speed4x_V.json  s3tok bf16 again with 4x the default frames per forward pass (192000)
#       and exact.md / speed.md, the tables of tools/bench_report.py. A failed step is counted, logged and
#       skipped; the exit status is the number of failures.
#
# With the device tool (carry [".gpu_bench"]):
#   bash tools/device_bench.sh run $OUT 600 cuda "v1 v1_25hz"; bash tools/device_bench.sh run $OUT 600 cuda "v2_25hz v3_25hz"
set -uo pipefail
cd "$(dirname "$0")/.."
carry=.gpu_bench

prepare() {
    mkdir -p "$carry/audio"
    grep -qx "/$carry/" .git/info/exclude 2>/dev/null || echo "/$carry/" >> .git/info/exclude
    local py
    for py in 3.10 3.11 3.12 3.13; do  # the GPU image's Python is not known here: one folder per version
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$carry/wheels/cp${py/./}" soundfile cffi pycparser kaldi-native-io setuptools wheel \
            || return 1
    done
    cp ../shared/reference/audio/* "$carry/audio/" || return 1
    du -sh "$carry"
}

run() {
    local out=${1:?usage: tools/device_bench.sh run OUT [MINUTES] [DEVICE] [VERSIONS]}
    local minutes=${2:-600} device=${3:-cuda} versions=${4:-v1 v1_25hz v2_25hz v3_25hz}
    local work=${S3TOK_BENCH_WORK:-/tmp/s3tok_device_bench} threads failed=0
    threads=$(nproc)
    mkdir -p "$out" "$work/models"
    log() { echo "$(date '+%F %T') device_bench: $*" | tee -a "$out/device_bench.log"; }
    step() {  # run one step; a failure is counted and logged, and the next step goes on
        log "$*"
        "$@" >> "$out/device_bench.log" 2>&1
        local rc=$?
        [ "$rc" -eq 0 ] || { failed=$((failed + 1)); log "FAILED (exit $rc): $*"; }
    }
    # from the checkout's root "import s3tok" works uninstalled; the console script and soundfile tell
    if ! command -v s3tok > /dev/null || ! python3 -c "import soundfile, kaldi_native_io" 2> /dev/null; then
        local wheels
        wheels=$carry/wheels/$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
        if [ -d "$wheels" ]; then
            python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl \
                >> "$out/device_bench.log" 2>&1 || { log "wheel install failed"; return 1; }
            export PYTHONPATH=/tmp/site
        fi
        python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >> "$out/device_bench.log" 2>&1 \
            || { log "s3tok install failed"; return 1; }
    fi
    local audio=$carry/audio
    [ -d "$audio" ] || audio=../shared/reference/audio
    log "$(python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'); $threads CPU threads"
    nvidia-smi >> "$out/device_bench.log" 2>&1 || true
    [ -d "$work/clips" ] || step python3 tools/make_clip_set.py --minutes "$minutes" --out "$work/clips" "$audio"
    for v in $versions; do
        local model=$work/models/$v.onnx
        [ -f "$model" ] || step s3tok export-onnx --random-init --version "speech_tokenizer_$v" "$model"
        step python3 tools/bench.py --model "$model" --wav_dir "$audio" --threads "$threads" --device "$device" \
            --runs 2 --engines ort-N,s3tok-fp32,s3tok-bf16 --json "$out/exact_$v.json"
        step python3 tools/bench.py --model "$model" --wav_dir "$work/clips" --threads "$threads" \
            --device "$device" --runs 2 --batch_size 128 --num_workers "$threads" \
            --engines s3tok-fp32,s3tok-bf16 --json "$out/speed_$v.json"
        # batch size 128 with the GPU default of 48000 frames per pass (about 96 clips of 5 s): the frame
        # budget decides, and decoding runs a chunk of 8 x 128 clips ahead of the model.
        # The batch policy: bf16 again with 4x the frames per forward pass
        step python3 tools/bench.py --model "$model" --wav_dir "$work/clips" --threads "$threads" \
            --device "$device" --runs 2 --batch_size 512 --num_workers "$threads" --max_frames_per_batch 192000 \
            --engines s3tok-bf16 --json "$out/speed4x_$v.json"
    done
    local exact speed
    exact=$(ls "$out"/exact_*.json 2>/dev/null) && step python3 tools/bench_report.py $exact --out "$out/exact.md"
    speed=$(ls "$out"/speed_*.json 2>/dev/null) && step python3 tools/bench_report.py $speed --out "$out/speed.md"
    speed=$(ls "$out"/speed4x_*.json 2>/dev/null) && step python3 tools/bench_report.py $speed --out "$out/speed4x.md"
    log "done: $failed failed step(s); log is in $out/device_bench.log"
    return "$failed"
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: tools/device_bench.sh prepare | run OUT [MINUTES] [DEVICE] [VERSIONS]" >&2; exit 2 ;;
esac
