#!/usr/bin/env bash
# Kaldi's validate_data_dir.sh, in Python:  utils/validate_data_dir.sh [--no-text] [--no-feats] [--no-wav]
#   [--no-spk-sort] DATA_DIR   (see: python3 -m s3tok.bin.validate_data_dir --help). Exit 1 when invalid.
exec "${S3TOK_PYTHON:-python3}" -m s3tok.bin.validate_data_dir "$@"
