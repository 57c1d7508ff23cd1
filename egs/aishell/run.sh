#!/usr/bin/env bash
# AISHELL-1 -> CosyVoice S3 speech tokens with the official v2 tokenizer.
#   ./run.sh [--stage -1] [--stop_stage 5] [--model NAME|PATH|demo] [--nj 4] [--device cuda] ...
# Stages: -1 download AISHELL-1 into corpus/, 0 data dirs (local/data.sh), then ../TEMPLATE/tokens.sh's
# 1 log-mels, 2 tokens, 3 merge (+ data/<set>/tokenized for CosyVoice), 4 parity, 5 statistics.
set -euo pipefail
cd "$(dirname "$0")"
exec ../TEMPLATE/tokens.sh --stage -1 --sets "train dev test" --model speech_tokenizer_v2_25hz \
  --parquet_opts "--text_remove_spaces" \
  --corpus_dir corpus "$@"
