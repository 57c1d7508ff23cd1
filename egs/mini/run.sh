#!/usr/bin/env bash
# The smoke-test recipe: the AISHELL recipe's stages on a tiny corpus shipped in the repo (corpus/, 9
# utterances made with espeak-ng in AISHELL-1's layout). Runs offline: its default model is the demo model
# (random weights, meaningless tokens; --model speech_tokenizer_v2_25hz for real ones).
#   ./run.sh [--stage 0] [--stop_stage 5] [--model demo|NAME|PATH] [--sets "train dev test"] ...
set -euo pipefail
cd "$(dirname "$0")"
exec ../TEMPLATE/tokens.sh --sets "train dev test" --nj 2 --model demo --spk_model demo \
  --parquet_opts "--text_remove_spaces" --corpus_dir corpus "$@"
