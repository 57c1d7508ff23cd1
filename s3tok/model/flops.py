"""Useful floating-point operations of one forward pass (multiply-add = 2 FLOPs), for speed reports."""
from __future__ import annotations

from typing import Dict

from s3tok.model.config import S3Config
from s3tok.model.windows import plan_segments


def _conv_len(n: int, stride: int) -> int:
    return (n - 1) // stride + 1


def window_flops_by_op(config: S3Config, frames: int) -> Dict[str, float]:
    """FLOPs of one window of ``frames`` mel frames (at most 30 s, no padding) by kind of operation:
    ``conv`` (the two input convolutions and the FSMN memory), ``linear`` (query, key, value, out and the
    MLP of every block, and the quantizer's projection) and ``attention`` (scores and weighted sums)."""
    d = config.width
    t1 = _conv_len(frames, config.conv1_stride)
    t2 = _conv_len(t1, config.conv2_stride)
    conv = 2.0 * 3 * config.n_mels * d * t1 + 2.0 * 3 * d * d * t2
    if config.fsmn:
        conv += config.depth * 2.0 * config.fsmn_kernel * d * t2
    linear = config.depth * 24.0 * d * d * t2  # query, key, value, out (4 D^2) and the MLP (8 D^2), 2 FLOPs each
    linear += 2.0 * d * (config.codebook_size if config.quantizer == "vq" else config.fsq_dim) * t2
    attention = config.depth * 4.0 * t2 * t2 * d  # scores and weighted sum over all heads
    return {"conv": conv, "linear": linear, "attention": attention}


def window_flops(config: S3Config, frames: int) -> float:
    """FLOPs of the encoder and quantizer on ``frames`` mel frames (at most one 30 s window), no padding."""
    return sum(window_flops_by_op(config, frames).values())


def utterance_flops(config: S3Config, frames: int) -> float:
    """FLOPs of an utterance, long ones counted window by window as the long-audio rule runs them."""
    segs = plan_segments(0, frames, config.num_tokens, config.token_rate)
    return sum(window_flops(config, s.length) for s in segs)
