#!/usr/bin/env bash
# Kaldi's fix_data_dir.sh, in Python:  utils/fix_data_dir.sh [--utt-extra-files "f1 f2"] DATA_DIR
#   (see: python3 -m s3tok.bin.fix_data_dir --help). Originals of changed files go to DATA_DIR/.backup/.
exec "${S3TOK_PYTHON:-python3}" -m s3tok.bin.fix_data_dir "$@"
