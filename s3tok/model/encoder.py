"""The S3 tokenizer encoder: two convolutions and pre-LN transformer blocks (optionally rotary + FSMN)."""
from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from s3tok.model.config import S3Config
from s3tok.model.linear import linear

logger = logging.getLogger(__name__)


def conv_out_lengths(lengths: Tensor, stride: int) -> Tensor:
    """Length after a kernel-3, padding-1 convolution: ``(L - 1) // stride + 1``."""
    return torch.div(lengths - 1, stride, rounding_mode="floor") + 1


def conv_out_length(length: int, stride: int) -> int:
    """:func:`conv_out_lengths` of one host integer."""
    return (length - 1) // stride + 1


def sdpa_backends(device: torch.device, dtype: torch.dtype) -> Optional[List[SDPBackend]]:
    """The attention kernels fp32 may use on ``device``, or None for PyTorch's choice. CUDA fp32: the math
    backend only, whose products are cuBLAS matrix products that :func:`~s3tok.model.ieee_fp32.ieee_fp32`
    keeps IEEE; with a padding mask PyTorch would pick the memory-efficient kernel, which may run fp32
    products as TF32 passes on recent GPUs (attention is about 2 % of the encoder's work)."""
    if device.type == "cuda" and dtype == torch.float32:
        return [SDPBackend.MATH]
    return None


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean ``[B, max_len]``, True on real (non-padded) positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class Rows:
    """Where the real frames of a padded batch ``[B, T, D]`` sit in its flat ``[B * T, D]`` view.

    On a CPU the encoder keeps its residual stream packed (``[N, D]``, real frames only, item after item), so
    that no step computes padding: the products, LayerNorms and GELUs run on the packed rows, and attention
    and the FSMN memory, which look across frames, run on each item's own frames (:meth:`per_item`), as at
    batch 1: no key mask, no attention scores of padded frames."""

    def __init__(self, valid: Tensor, lengths: Sequence[int]):
        """``valid [B, T]`` True on real frames; ``lengths``: each item's count of them, on the host."""
        self.batch, self.frames = valid.shape
        self.index = valid.reshape(-1).nonzero().squeeze(1)
        self.positions = self.index % self.frames  # each packed row's frame within its item
        self.lengths = [int(n) for n in lengths]
        self.starts = [0, *itertools.accumulate(self.lengths[:-1])]

    def pack(self, x: Tensor) -> Tensor:
        """``[B, T, ...]`` (any strides) to ``[N, ...]``."""
        return x.reshape(self.batch * self.frames, *x.shape[2:]).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """``[N, D]`` to ``[B, T, D]``, zeros on the padded frames."""
        out = x.new_zeros(self.batch * self.frames, x.shape[-1])
        return out.index_copy_(0, self.index, x).view(self.batch, self.frames, -1)

    def per_item(self, fn: Callable[..., Tensor], *xs: Tensor) -> Tensor:
        """``fn`` on each item alone, packed: ``fn`` takes ``[1, n, ...]`` slices of the packed ``xs`` (one item's
        ``n`` frames) and returns ``[1, n, ...]``; the results come back as ``[N, ...]``."""
        return torch.cat([fn(*(x[s:s + n][None] for x in xs))[0] for s, n in zip(self.starts, self.lengths)])


def rotary_table(positions: int, dim: int, theta: float, device=None) -> Tuple[Tensor, Tensor]:
    """cos and sin ``[positions, dim]`` in the rotate-half layout (the frequencies repeated twice).

    Angles are formed in float32 exactly as the official export does (``torch.polar`` of a float32
    outer product), so the table equals the one stored in the ONNX graphs.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(positions, device=device).float(), freqs)
    cis = torch.polar(torch.ones_like(angles), angles)
    cos, sin = cis.real, cis.imag
    return torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x * cos + rotate_half(x) * sin`` on ``x [B, T, H, Dh]`` with tables ``[T, Dh]``, where
    ``rotate_half(x) = [-x2, x1]``; two passes over ``x`` and no temporaries."""
    half = x.shape[-1] // 2
    out = x * cos[:, None, :]
    s = sin[:, None, :half]  # the table repeats the frequencies: both halves have the same sines
    out[..., :half].addcmul_(x[..., half:], s, value=-1.0)
    out[..., half:].addcmul_(x[..., :half], s)
    return out


class Attention(nn.Module):
    """Multi-head self-attention; key without bias; optional rotary positions and FSMN memory."""

    def __init__(self, cfg: S3Config):
        super().__init__()
        d = cfg.width
        self.heads = cfg.heads
        self.head_dim = cfg.head_dim
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.rotary = cfg.positional == "rotary"
        self.fsmn_block: Optional[nn.Conv1d] = None
        if cfg.fsmn:
            k = cfg.fsmn_kernel
            self.fsmn_block = nn.Conv1d(d, d, k, groups=d, bias=False)
            self.fsmn_pad = (k - 1) // 2
        self.use_sdpa = True

    def forward(self, x: Tensor, key_bias: Optional[Tensor], pad_mask: Optional[Tensor],
                rope: Optional[Tuple[Tensor, Tensor]] = None, residual: Optional[Tensor] = None,
                rows: Optional[Rows] = None) -> Tensor:
        """``x [B, T, D]``; ``key_bias [B, 1, 1, T]`` additive (fp32) and ``pad_mask [B, T, 1]`` 0/1 in x's
        dtype, both None when no item of the batch is padded; ``rope`` tables ``[T, Dh]``. With ``rows``, ``x``
        (and ``residual``) are the packed real frames ``[N, D]`` and so is the result, ``rope`` has a row per
        packed frame, the masks are None, and attention and the FSMN memory run item by item.
        Returns ``residual + attention(x)`` when ``residual`` is given, else the attention output."""
        q, k, v = linear(self.query, x), linear(self.key, x), linear(self.value, x)
        memory = None
        if self.fsmn_block is not None:
            memory = self._memory(v, pad_mask) if rows is None else rows.per_item(self._memory, v)
        heads = (*q.shape[:-1], self.heads, self.head_dim)
        q, k, v = q.view(heads), k.view(heads), v.view(heads)
        if rope is not None:
            cos, sin = rope
            q = apply_rotary(q, cos, sin)
            k = apply_rotary(k, cos, sin)
        adt = self.out.weight.dtype  # mixed precision: attention in the weights' dtype
        q, k, v = q.to(adt), k.to(adt), v.to(adt)
        if rows is None:
            o = self._attend(q, k, v, key_bias)
        else:
            o = rows.per_item(lambda *qkv: self._attend(*qkv, None), q, k, v)
        o = o.reshape(*o.shape[:-2], -1)
        if memory is None:  # out(o) + residual, in one fused step when possible
            return linear(self.out, o, add=residual)
        o = linear(self.out, o, add=memory)  # the official order: x + (out(o) + memory)
        return o if residual is None else residual + o

    def _memory(self, v: Tensor, pad_mask: Optional[Tensor] = None) -> Tensor:
        """FSMN memory ``v + conv(v)`` of ``v [B, T, D]``, zero on the padded frames ``pad_mask`` marks."""
        if pad_mask is not None:
            v = v * pad_mask
        m = F.pad(v.transpose(1, 2), (self.fsmn_pad, self.fsmn_pad))
        memory = v + self.fsmn_block(m).transpose(1, 2)  # v first: the sum comes out contiguous
        return memory if pad_mask is None else memory * pad_mask

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_bias: Optional[Tensor]) -> Tensor:
        """Attention of ``q, k, v [B, T, H, Dh]``, keys masked by ``key_bias``; ``[B, T, H, Dh]`` (a view)."""
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.use_sdpa:  # the kernel scales the scores by head_dim^-0.5 itself
            backends = sdpa_backends(q.device, q.dtype)
            with sdpa_kernel(backends) if backends else contextlib.nullcontext():
                o = F.scaled_dot_product_attention(q, k, v,
                                                   attn_mask=None if key_bias is None else key_bias.to(q.dtype),
                                                   scale=self.head_dim ** -0.5)
        else:  # the official order: q and k each scaled by head_dim^-0.25
            scale = self.head_dim ** -0.25
            w = ((q * scale) @ (k * scale).transpose(-1, -2)).float()
            if key_bias is not None:
                w = w + key_bias
            o = torch.softmax(w, dim=-1).to(q.dtype) @ v
        return o.transpose(1, 2)


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, cfg: S3Config):
        super().__init__()
        d = cfg.width
        self.attn_ln = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.attn = Attention(cfg)
        self.mlp_ln = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: Tensor, key_bias: Optional[Tensor], pad_mask: Optional[Tensor],
                rope: Optional[Tuple[Tensor, Tensor]] = None, rows: Optional[Rows] = None) -> Tensor:
        x = self.attn(self.attn_ln(x), key_bias, pad_mask, rope, residual=x, rows=rows)
        return linear(self.mlp[2], linear(self.mlp[0], self.mlp_ln(x), gelu=True), add=x)


class Encoder(nn.Module):
    """Log-mel ``[B, n_mels, T]`` to hidden states ``[B, T', width]`` with exact padding masks."""

    def __init__(self, cfg: S3Config):
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.conv1 = nn.Conv1d(cfg.n_mels, d, 3, stride=cfg.conv1_stride, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=cfg.conv2_stride, padding=1)
        if cfg.positional == "table":
            self.positional_embedding = nn.Parameter(torch.zeros(cfg.max_positions, d))
        else:
            self.positional_embedding = None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self._rope_cache: Optional[Tuple[Tensor, Tensor]] = None
        self.pack_rows = True  # on a CPU, skip the padded frames in the frame-by-frame steps (:class:`Rows`)

    def _rope(self, t: int, device: torch.device, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        cache = self._rope_cache
        if cache is None or cache[0].shape[0] < t or cache[0].device != device or cache[0].dtype != dtype:
            n = max(2048, t)
            cos, sin = rotary_table(n, self.cfg.head_dim, self.cfg.rope_theta)
            cache = (cos.to(device, dtype), sin.to(device, dtype))
            self._rope_cache = cache
        return cache[0][:t], cache[1][:t]

    def out_length(self, frames: int) -> int:
        """Hidden frames of an item of ``frames`` mel frames (after the two convolutions)."""
        return conv_out_length(conv_out_length(frames, self.cfg.conv1_stride), self.cfg.conv2_stride)

    def output_padded(self, lengths: Sequence[int], frames: int) -> bool:
        """Whether some item of ``lengths`` (host integers) is shorter than the others after the two
        convolutions of a ``frames``-long batch: what :meth:`forward` would find on the device."""
        return any(self.out_length(n) < self.out_length(frames) for n in lengths)

    def forward(self, mels: Tensor, lengths: Tensor, padded: Optional[bool] = None,
                frames: Optional[Sequence[int]] = None) -> Tuple[Tensor, Tensor]:
        """Return hidden states ``[B, T', D]`` and their lengths ``[B]``.

        ``padded``: :meth:`output_padded` of the lengths, when the caller knows them on the host; None asks
        the device (a wait on CUDA). ``frames``: the lengths themselves on the host, when known; on a CPU a
        padded batch is run packed (:class:`Rows`) when they are given or when ``padded`` is None."""
        x, lengths, rows = self.hidden(mels, lengths, padded, frames)
        return (x if rows is None else rows.unpack(x)), lengths

    def hidden(self, mels: Tensor, lengths: Tensor, padded: Optional[bool] = None,
               frames: Optional[Sequence[int]] = None) -> Tuple[Tensor, Tensor, Optional[Rows]]:
        """:meth:`forward`, with the hidden states left packed (``[N, D]``, real frames only) where the blocks ran
        them packed: returns them, their lengths and the :class:`Rows` that unpack them (None: ``[B, T', D]``)."""
        x = mels * length_mask(lengths, mels.shape[-1])[:, None, :].to(mels.dtype)
        x = F.gelu(self.conv1(x))
        lengths = conv_out_lengths(lengths, self.cfg.conv1_stride)
        x = x * length_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        x = F.gelu(self.conv2(x))
        lengths = conv_out_lengths(lengths, self.cfg.conv2_stride)
        x = x.transpose(1, 2)
        t = x.shape[1]
        valid = length_mask(lengths, t)
        rope = None
        if self.positional_embedding is not None:
            if t > self.positional_embedding.shape[0]:
                raise ValueError(f"{t} positions exceed the positional table ({self.positional_embedding.shape[0]}); "
                                 "long inputs must be cut into windows first")
            x = x + self.positional_embedding[:t].to(x.dtype)
        else:
            rope = self._rope(t, x.device, x.dtype)
        key_bias: Optional[Tensor] = None
        pad_mask: Optional[Tensor] = None
        host_lengths = None if frames is None else [self.out_length(n) for n in frames]
        if padded is None:  # asks the device; the lengths too, when the frames will be packed
            padded = not bool(valid.all())
            if padded and host_lengths is None and x.device.type == "cpu":
                host_lengths = lengths.tolist()
        rows = None
        if padded and self.pack_rows and x.device.type == "cpu" and host_lengths is not None:
            rows = Rows(valid, host_lengths)
        if rows is not None:  # packed: no padded frame anywhere, attention and FSMN item by item
            x = rows.pack(x)
            if rope is not None:
                rope = (rope[0].index_select(0, rows.positions), rope[1].index_select(0, rows.positions))
        elif padded:  # some item is padded: mask its keys and its FSMN input/output
            key_bias = torch.zeros(valid.shape, dtype=torch.float32, device=x.device)
            key_bias = key_bias.masked_fill(~valid, -1e10)[:, None, None, :]
            pad_mask = valid[:, :, None].to(x.dtype)
        for block in self.blocks:
            x = block(x, key_bias, pad_mask, rope, rows)
        return x, lengths, rows
