#!/usr/bin/env bash
# Mini recipe: tokenize the 17 clips of the shared reference set with one of its models.
#   ./run.sh [--stage 0] [--stop_stage 1] [--model PATH] [--batch_size 8] [--device cpu]
# Stage 0 makes data/mini/wav.scp from an audio directory; stage 1 writes exp/<model>/tokens.txt and utt2fail.
set -euo pipefail
cd "$(dirname "$0")"
. ../../path.sh

stage=0
stop_stage=1
audio_dir=../../../shared/reference/audio
model=../../../shared/reference/models/speech_tokenizer_v2_25hz.onnx
batch_size=8
device=cpu
dtype=float32
. ../../utils/parse_options.sh

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "$0"):${BASH_LINENO[0]}) $*"; }

data=data/mini
exp=exp/$(basename "$model" .onnx)

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "Stage 0: $data/wav.scp from $audio_dir"
  python -m s3tok.bin.make_wav_scp --audio_dir "$audio_dir" --output "$data/wav.scp"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: tokens of $data with $model into $exp"
  python -m s3tok.bin.tokenize --wav_scp "$data/wav.scp" --model "$model" --output_dir "$exp" \
    --batch_size "$batch_size" --device "$device" --dtype "$dtype" --no_progress
  log "$(wc -l < "$exp/tokens.txt") utterances in $exp/tokens.txt, $(wc -l < "$exp/utt2fail") in $exp/utt2fail"
fi
