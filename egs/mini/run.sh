#!/usr/bin/env bash
# The smoke-test recipe: the AISHELL recipe on a tiny corpus shipped in the repo (corpus/, 9 utterances made
# with espeak-ng in AISHELL-1's layout). Runs offline: its default model is the demo model (random weights,
# meaningless tokens). Same stages and options as egs/aishell/run.sh, minus the download:
#   ./run.sh [--stage 0] [--stop_stage 5] [--model demo|NAME|PATH]
set -euo pipefail
cd "$(dirname "$0")"
exec ../aishell/run.sh --stage 0 --corpus_dir corpus --nj 2 \
  --model demo "$@"
