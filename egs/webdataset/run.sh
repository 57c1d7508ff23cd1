#!/usr/bin/env bash
# Tar shards (WebDataset layout, as Emilia ships) -> S3 tokens, without unpacking: the shared stages of
# ../TEMPLATE/tokens.sh on a synthetic set that local/data.sh makes from egs/mini's corpus (FLAC and MP3
# members with JSON text and speaker). Offline by default (--model demo: random weights).
#   ./run.sh [--stage 0] [--stop_stage 5] [--model demo|NAME|PATH] [--nj 2] ...
set -euo pipefail
cd "$(dirname "$0")"
exec ../TEMPLATE/tokens.sh --sets "train test" --nj 2 --model demo --spk_model demo --dev_sets test \
  --corpus_dir corpus "$@"
