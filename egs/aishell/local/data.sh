#!/usr/bin/env bash
# AISHELL-1's data dirs: stage -1 downloads the corpus (OpenSLR 33, mirrors, MD5, resumable), stage 0
# writes data/<set>/{wav.scp,text,utt2spk,spk2utt}.
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
if [ "$stage" -le -1 ] && [ "$stop_stage" -ge -1 ]; then
  log "download AISHELL-1 into $corpus_dir"
  s3tok download-aishell --target_dir "$corpus_dir"
fi
if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "data/{${sets// /,}} from $corpus_dir"
  s3tok prepare-aishell --corpus_dir "$corpus_dir" --data_dir data --sets "${sets// /,}"
fi
