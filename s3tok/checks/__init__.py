"""Checks of a tokenized set: parity with onnxruntime at batch 1, token statistics and their plots."""
