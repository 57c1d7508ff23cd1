"""Useful floating-point operations of one forward pass (multiply-add = 2 FLOPs), for speed reports."""
from __future__ import annotations

from .config import S3Config
from .windows import plan_segments


def _conv_len(n: int, stride: int) -> int:
    return (n - 1) // stride + 1


def window_flops(config: S3Config, frames: int) -> float:
    """FLOPs of the encoder and quantizer on ``frames`` mel frames (at most one 30 s window), no padding."""
    d = config.width
    t1 = _conv_len(frames, config.conv1_stride)
    t2 = _conv_len(t1, config.conv2_stride)
    flops = 2.0 * 3 * config.n_mels * d * t1 + 2.0 * 3 * d * d * t2
    per_block = 24.0 * d * d * t2  # query, key, value, out (4 D^2) and the MLP (8 D^2), 2 FLOPs each
    per_block += 4.0 * t2 * t2 * d  # scores and weighted sum over all heads
    if config.fsmn:
        per_block += 2.0 * config.fsmn_kernel * d * t2
    flops += config.depth * per_block
    flops += 2.0 * d * (config.codebook_size if config.quantizer == "vq" else config.fsq_dim) * t2
    return flops


def utterance_flops(config: S3Config, frames: int) -> float:
    """FLOPs of an utterance, long ones counted window by window as the long-audio rule runs them."""
    segs = plan_segments(0, frames, config.num_tokens, config.token_rate)
    return sum(window_flops(config, s.length) for s in segs)
