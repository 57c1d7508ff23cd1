#!/usr/bin/env bash
# The stages every recipe shares (ESPnet's asr.sh pattern): a recipe's run.sh calls this from its own folder
#   ../TEMPLATE/tokens.sh --sets "train dev test" --model NAME [--local_data_opts "..."] "$@"
# and provides local/data.sh, which makes data/<set> for the stages <= 0 it is given (e.g. -1 download, 0 prepare).
#  <=0 local/data.sh (the recipe's own stages: aishell -1 download, 0 prepare), then the data dirs are validated
#    1 log-mels (exp/mel/<set>, data/<set>/feats.scp)   2 tokenize (exp/<tag>/<set>, $nj jobs)
#    3 merge into data/<set>: tokens.scp, utt2num_tokens, utt2fail, tokenizer.json, utt2speech_token.pt, and
#      data/<set>/tokenized: the set restricted to utterances with tokens (for CosyVoice's tools)
#    4 parity: onnxruntime at batch 1 (CosyVoice's way) on $parity_utts utterances per set vs tokens.scp
#    5 token statistics and plots in data/<set>/stats (warns on a wrong rate, odd codebook use, ...)
#    6 CAM++ speaker embeddings (exp/campplus/<set>, $nj jobs), merged into data/<set>: utt2embedding.pt,
#      spk2embedding.pt (CosyVoice's tools/extract_embedding.py, batched)
#    7 CosyVoice's parquet shards in data/<set>/parquet, and data/train.data.list, data/dev.data.list
# Runs in the current directory: the calling recipe's folder (its cmd.sh and conf/ are used when present).
set -euo pipefail
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$recipe/../.." && pwd)
. "$root/path.sh"

stage=0
stop_stage=7
local_data_opts=""                   # options for the recipe's local/data.sh
corpus_dir=""                        # shorthand for --local_data_opts "--corpus_dir DIR"
sets="train dev test"
model=speech_tokenizer_v2_25hz       # official name (downloaded), .onnx path, or demo (random weights, offline)
nj=4                                 # jobs per set
device=cpu                           # cpu or cuda (one GPU per job)
dtype=float32
batch_size=""                        # most utterances per batch (empty: 16 on CPU, the frame budget on a GPU)
use_mel=true                         # stage 1 stores log-mels for stage 2; false: stage 2 decodes audio itself
max_fail_ratio=0.05
parity_utts=200                      # stage 4 sample size per set (0: all)
max_miss_rate=0.0001
spk_model=campplus                   # CAM++: official name (downloaded), .onnx path, or demo (random weights)
embed_engine=auto                    # torch (batched), onnxruntime (batch 1, CosyVoice's way), auto
train_sets=train                     # sets whose shards go into data/train.data.list
dev_sets=dev                         # ... and data/dev.data.list
parquet_opts=""                      # e.g. "--text_remove_spaces" (AISHELL), "--instruct" (CosyVoice3)
. "$root/utils/parse_options.sh"
if [ $# -gt 0 ]; then   # parse_options.sh stops at the first word that is not an option: "--sets dev test"
  echo "$0: unexpected argument(s) '$*': this script takes only --name value options (a list of sets is one" \
       "value: --sets \"dev test\")" >&2
  exit 2
fi
if [ -f ./cmd.sh ]; then . ./cmd.sh; else . "$recipe/cmd.sh"; fi   # the calling recipe's own, else this one

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) $*"; }
gpu_opt=""; [ "${device%%:*}" = cuda ] && gpu_opt="--gpu 1"
threads=$(( $(nproc) / nj )); [ "$threads" -ge 1 ] || threads=1   # jobs share the cores, no oversubscription
tag=$(basename "${model%.onnx}")
stages() { [ "$stage" -le "$2" ] && [ "$stop_stage" -ge "$1" ]; }   # does the run include stages $1..$2?
# A set is a Kaldi data dir (wav.scp), or tar shards read in place (data/<set>/shards.list, + text/utt2spk).
sharded() { [ -f "data/$1/shards.list" ]; }
source_of() { if sharded "$1"; then echo "--tar_list data/$1/shards.list"; else echo "--data_dir data/$1"; fi; }

# Fail now, not hours later: the model must resolve, and the packages of the stages asked for must import.
require=""; stages 4 4 && require=onnxruntime; stages 5 5 && require="$require,matplotlib"
stages 7 7 && require="$require,pyarrow"
if stages 6 6; then s3tok resolve-model --speaker --model "$spk_model" --check_only; fi
s3tok resolve-model --model "$model" --check_only --require "$require"

if [ "$stage" -le 0 ]; then   # the recipe's own stages up to 0 (aishell: -1 download, 0 prepare)
  last=$(( stop_stage < 0 ? stop_stage : 0 )); span=$stage; [ "$last" -ne "$stage" ] && span="$stage..$last"
  log "Stage $span: data dirs data/{${sets// /,}} (local/data.sh)"
  # shellcheck disable=SC2086
  local/data.sh --stage "$stage" --stop_stage "$last" --sets "$sets" \
    $local_data_opts ${corpus_dir:+--corpus_dir "$corpus_dir"}
  if [ "$stop_stage" -ge 0 ]; then
    for set in $sets; do sharded "$set" || "$root/utils/validate_data_dir.sh" --no-feats "data/$set"; done
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ] && [ "$use_mel" = true ]; then
  for set in $sets; do
    if sharded "$set"; then log "Stage 1: data/$set is read from its tar shards in stage 2"; continue; fi
    log "Stage 1: log-mels of data/$set ($nj jobs, logs in exp/mel/$set/log)"
    $cmd --num-threads "$threads" JOB=1:"$nj" "exp/mel/$set/log/mel.JOB.log" \
      s3tok compute-mel --data_dir "data/$set" --output_dir "exp/mel/$set" \
        --num_jobs "$nj" --job JOB --no_progress
    s3tok merge-mel --data_dir "data/$set" --output_dir "exp/mel/$set" --num_jobs "$nj" \
      --max_fail_ratio "$max_fail_ratio"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  model_path=$(s3tok resolve-model --model "$model" --demo_dir exp/models)
  for set in $sets; do
    input=$(source_of "$set"); [ "$use_mel" = true ] && ! sharded "$set" && input="--feats_scp data/$set/feats.scp"
    log "Stage 2: tokens of data/$set with $model ($nj jobs, logs in exp/$tag/$set/log)"
    $cmd $gpu_opt --num-threads "$threads" JOB=1:"$nj" "exp/$tag/$set/log/tokenize.JOB.log" \
      s3tok tokenize $input --model "$model_path" --output_dir "exp/$tag/$set" \
        --num_jobs "$nj" --job JOB --device "$device" --dtype "$dtype" ${batch_size:+--batch_size "$batch_size"} \
        --max_fail_ratio 1 --no_progress
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  for set in $sets; do
    log "Stage 3: merge exp/$tag/$set into data/$set"
    prior=""; [ "$use_mel" = true ] && ! sharded "$set" && prior="--prior_fail data/$set/mel_fail"
    consistent="--consistent_dir data/$set/tokenized"; sharded "$set" && consistent=""
    # shellcheck disable=SC2046
    s3tok merge-tokens $(source_of "$set") --output_dir "exp/$tag/$set" --num_jobs "$nj" \
      --dest "data/$set" --utt2speech_token "data/$set/utt2speech_token.pt" $prior \
      $consistent --max_fail_ratio "$max_fail_ratio"
  done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  model_path=$(s3tok resolve-model --model "$model" --demo_dir exp/models)
  for set in $sets; do
    log "Stage 4: parity of data/$set/tokens.scp with onnxruntime ($parity_utts utterances)"
    # shellcheck disable=SC2046
    s3tok score-parity $(source_of "$set") --tokens "data/$set/tokens.scp" --model "$model_path" \
      --num_utts "$parity_utts" --max_miss_rate "$max_miss_rate" --output "exp/$tag/$set/parity.json"
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  for set in $sets; do
    log "Stage 5: token statistics of data/$set in data/$set/stats"
    s3tok stats "data/$set" --out_dir "data/$set/stats"
  done
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  spk_path=$(s3tok resolve-model --speaker --model "$spk_model" --demo_dir exp/models)
  for set in $sets; do
    log "Stage 6: CAM++ speaker embeddings of data/$set ($embed_engine engine, $nj jobs, logs in exp/campplus/$set/log)"
    # shellcheck disable=SC2046
    $cmd --num-threads "$threads" JOB=1:"$nj" "exp/campplus/$set/log/embed.JOB.log" \
      s3tok embed $(source_of "$set") --model "$spk_path" --engine "$embed_engine" --output_dir "exp/campplus/$set" \
        --num_jobs "$nj" --job JOB --num_threads "$threads" --max_fail_ratio 1 --no_progress
    # shellcheck disable=SC2046
    s3tok merge-embeddings $(source_of "$set") --output_dir "exp/campplus/$set" --num_jobs "$nj" \
      --dest "data/$set" --utt2spk "data/$set/utt2spk" --max_fail_ratio "$max_fail_ratio"
  done
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  for set in $sets; do
    log "Stage 7: CosyVoice parquet shards of data/$set in data/$set/parquet"
    shards=""; sharded "$set" && shards="--tar_list data/$set/shards.list"
    # shellcheck disable=SC2086
    s3tok make-parquet --data_dir "data/$set" $shards --output_dir "data/$set/parquet" \
      --max_skipped_ratio "$max_fail_ratio" --no_progress $parquet_opts
  done
  for part in train dev; do   # CosyVoice's train.py takes one list of shards for training, one for cv
    [ "$part" = train ] && want=$train_sets || want=$dev_sets
    lists=""; for set in $want; do case " $sets " in *" $set "*) lists="$lists data/$set/parquet/data.list";; esac; done
    [ -n "$lists" ] || continue
    # shellcheck disable=SC2086
    cat $lists > "data/.$part.data.list.tmp" && mv "data/.$part.data.list.tmp" "data/$part.data.list"
    log "data/$part.data.list: $(wc -l < "data/$part.data.list") shards of data/{${want// /,}}"
  done
fi
