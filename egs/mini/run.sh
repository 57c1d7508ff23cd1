#!/usr/bin/env bash
# The AISHELL recipe on a tiny corpus shipped in the repo (corpus/, 9 utterances made with espeak-ng in
# AISHELL-1's layout), with a reference model from ../shared by default. Same stages and options as
# egs/aishell/run.sh, minus the download:   ./run.sh [--stage 0] [--stop_stage 3] [--model NAME|PATH|demo]
set -euo pipefail
cd "$(dirname "$0")"
exec ../aishell/run.sh --stage 0 --corpus_dir corpus --nj 2 \
  --model ../../../shared/reference/models/speech_tokenizer_v2_25hz.onnx "$@"
