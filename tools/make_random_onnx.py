#!/usr/bin/env python3
"""Make an official-layout ONNX tokenizer with random weights (official size by default), e.g. for benchmarks.

  python tools/make_random_onnx.py --random-init --version speech_tokenizer_v2_25hz /tmp/v2_random.onnx
"""
import sys

from s3tok.onnx_export import main

if __name__ == "__main__":
    sys.exit(main())
