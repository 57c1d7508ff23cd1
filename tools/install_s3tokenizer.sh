#!/usr/bin/env bash
# Make a side virtualenv in which the public `s3tokenizer` package imports, for the benchmark baseline rows.
#
#   tools/install_s3tokenizer.sh [VENV_DIR]          (default: tools/venv_s3tokenizer)
#   VENV_DIR/bin/python tools/bench.py --model M.onnx --wav_dir DIR --threads 2
#
# s3tokenizer imports torchaudio at module level. torchaudio's PyPI wheels are built against one torch
# version and a CUDA torch; their C extension does not load next to this project's CPU torch. The benchmark
# never calls torchaudio (audio and log-mel come from s3tok, the model is s3tokenizer's own), so the venv
# holds torchaudio without its compiled libraries: torchaudio then imports in its pure-Python mode.
# Nothing here is installed into the project's own environment.
set -euo pipefail

venv=${1:-$(dirname "$0")/venv_s3tokenizer}
python=${PYTHON:-python3}
torchaudio_version=${TORCHAUDIO_VERSION:-2.11.1}
s3tokenizer_version=${S3TOKENIZER_VERSION:-0.3.0}

"$python" -c "import torch, s3tok" || { echo "$0: install torch and s3tok first (see README)" >&2; exit 1; }
"$python" -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --no-deps "torchaudio==$torchaudio_version" einops "s3tokenizer==$s3tokenizer_version"
libdir=$("$venv/bin/python" -c "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('torchaudio').origin), 'lib'))")
rm -f "$libdir"/*.so
"$venv/bin/python" -c "import s3tokenizer" || { echo "$0: s3tokenizer still does not import in $venv" >&2; exit 1; }
echo "$0: s3tokenizer $s3tokenizer_version importable with $venv/bin/python" >&2
