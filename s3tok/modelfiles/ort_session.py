"""onnxruntime sessions as CosyVoice's own extractors make them, for every ONNX file s3tok runs."""
from __future__ import annotations

import os
from typing import Union


def cpu_session(path: Union[str, os.PathLike], threads: int = 1):
    """A CPU session of ``path`` with full graph optimisation, ``threads`` intra-op threads and one inter-op
    thread. ``ImportError`` when onnxruntime is not installed (the callers say which extra brings it)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
