#!/usr/bin/env bash
# The mini corpus's data dirs (corpus/ is shipped in AISHELL-1's layout, so AISHELL's preparation reads it).
#   local/data.sh --stage N --stop_stage M --sets "train dev test" [--corpus_dir corpus]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
. "$root/path.sh"
stage=0
stop_stage=0
sets="train dev test"
corpus_dir=corpus
. "$root/utils/parse_options.sh"
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (local/data.sh:${BASH_LINENO[0]}) $*"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "data/{${sets// /,}} from $corpus_dir"
  s3tok prepare-aishell --corpus_dir "$corpus_dir" --data_dir data --sets "${sets// /,}"
fi
