#!/usr/bin/env bash
# The webdataset recipe's sets: tar shards read in place. Stage 0 makes the synthetic shards (once) and, per
# set, data/<set>/shards.list (absolute paths) plus text, utt2spk and spk2utt from the shards' JSON members.
#   local/data.sh --stage N --stop_stage M --sets "train test" [--corpus_dir corpus]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
. "$root/path.sh"
stage=0
stop_stage=0
sets="train test"
corpus_dir=corpus
. "$root/utils/parse_options.sh"
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (local/data.sh:${BASH_LINENO[0]}) $*"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  [ -f "$corpus_dir/test.list" ] || python local/make_shards.py --mini_corpus ../mini/corpus --out "$corpus_dir"
  for set in $sets; do
    log "data/$set from $corpus_dir/$set.list"
    mkdir -p "data/$set"
    sed "s|^|$(cd "$corpus_dir" && pwd)/|" "$corpus_dir/$set.list" > "data/$set/shards.list"
    s3tok shard-metadata --tar_list "data/$set/shards.list" --data_dir "data/$set"
  done
fi
