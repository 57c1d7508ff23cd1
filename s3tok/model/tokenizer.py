"""``S3Tokenizer``: encoder + quantizer, with exact batching and the long-audio window rule."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from s3tok.model.config import S3Config
from s3tok.model.encoder import Encoder
from s3tok.model.quantizers import FiniteScalarQuantizer, VectorQuantizer
from s3tok.model.packing import pack_by_length
from s3tok.model.windows import WINDOW, Segment, plan_segments
from s3tok.model.ieee_fp32 import ieee_fp32

logger = logging.getLogger(__name__)

# Default bound on one forward pass, in padded mel frames summed over its items. On a GPU, 16 windows of
# 30 s keep it busy. On a CPU large batches only spill the caches: with 2 threads, an hour of audio ran 15 %
# faster in fp32 and 10 % in bf16 with 2 windows per pass than with 16 (official-size v2, Intel Xeon).
GPU_MAX_FRAMES_PER_FORWARD = 16 * WINDOW
CPU_MAX_FRAMES_PER_FORWARD = 2 * WINDOW


def default_max_frames(device: Union[str, torch.device]) -> int:
    """Padded mel frames per forward pass that suit ``device``."""
    return CPU_MAX_FRAMES_PER_FORWARD if torch.device(device).type == "cpu" else GPU_MAX_FRAMES_PER_FORWARD


def to_device_nowait(t: Tensor, device: Union[str, torch.device]) -> Tensor:
    """``t`` on ``device`` without making the host wait. On CUDA a host tensor goes through pinned memory with
    a non-blocking copy (a copy from pageable memory waits for all the work queued on the stream);
    anywhere else this is ``t.to(device)``."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)


@contextlib.contextmanager
def exact_fp32(device: Union[str, torch.device]):
    """Within the block s3tok's own arithmetic on ``device`` (and on the host) is what it asks for: IEEE fp32
    (no TF32, :func:`ieee_fp32`) and no ``torch.autocast``. A mixed-precision training step runs under
    autocast, which would run the log-mel product, the convolutions and the linears in bf16/fp16 and change
    tokens silently; the model's own dtype (``load_model(dtype=...)``, :meth:`S3Tokenizer.set_dtype`) is
    set on its weights and is unaffected."""
    device = torch.device(device)
    with contextlib.ExitStack() as stack:
        for kind in dict.fromkeys(("cpu", device.type)):
            if kind in ("cpu", "cuda", "xpu", "mps", "hpu"):
                stack.enter_context(torch.autocast(kind, enabled=False))
        stack.enter_context(ieee_fp32(device))
        yield


def check_finite(x: Tensor, what: str) -> None:
    """ValueError naming the first batch item of ``x [B, ...]`` that holds NaN or infinity."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero()[:, 0].tolist()
        raise ValueError(f"{what} item {bad[0]} has non-finite values (NaN or inf)"
                         + (f"; so do items {bad[1:6]}" if len(bad) > 1 else ""))


def host_lengths(lens, batch: int, what: str) -> List[int]:
    """``lens`` (a 1-D tensor or array of whole numbers, or a list of ints) as Python ints, ``batch`` of them."""
    if not torch.is_tensor(lens):
        if not isinstance(lens, (list, tuple)) and type(lens).__module__ != "numpy":
            raise TypeError(f"{what} must be a 1-D integer tensor or a list of ints, got {type(lens).__name__}")
        try:
            lens = torch.as_tensor(lens) if len(lens) else torch.zeros(0, dtype=torch.int64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{what} must be a 1-D integer tensor or a list of ints: {e}") from None
    if lens.dim() != 1 or lens.shape[0] != batch:
        raise ValueError(f"{what} must be [B={batch}], got {list(lens.shape)}")
    if lens.is_complex() or lens.dtype == torch.bool:
        raise TypeError(f"{what} must hold integers, got {lens.dtype}")
    values = lens.tolist()
    frac = [(i, v) for i, v in enumerate(values) if v != int(v)] if lens.is_floating_point() else []
    if frac:
        raise ValueError(f"{what} item {frac[0][0]}: length {frac[0][1]} is not a whole number")
    return [int(v) for v in values]


def check_float(x: Tensor, what: str, samples: bool = False) -> None:
    """TypeError unless ``x`` is a floating-point tensor: integer PCM ``samples`` would go in unscaled."""
    if not torch.is_tensor(x):
        raise TypeError(f"{what} must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be floating point, got {x.dtype}"
                        + ("; PCM integer samples must be scaled to [-1, 1] first (int16: / 32768)"
                           if samples and not x.is_complex() and x.dtype != torch.bool else ""))


def covers_batch(group: Sequence[Segment], per_item: Sequence[Sequence[Segment]], padded_frames: int) -> bool:
    """Whether one forward pass of ``group`` is the batch itself: every item whole, in batch order (longest
    first), the longest as long as the padded batch; then the batch goes in as it is, with no copy."""
    return (len(group) == len(per_item) and group[0].length == padded_frames
            and all(seg.item == i and len(per_item[i]) == 1 for i, seg in enumerate(group)))


def check_lengths(lens: Sequence[int], size: int, what: str) -> None:
    """ValueError naming the first item whose length is outside ``1..size``."""
    for i, n in enumerate(lens):
        if n <= 0 or n > size:
            raise ValueError(f"{what} item {i}: length {n} outside 1..{size}")


def group_segments(segments: Sequence[Segment], max_frames: int, max_items: int = 0) -> List[List[Segment]]:
    """Forward passes of segments of similar length (longest first), at most ``max_frames`` padded
    frames each, so short items are never padded to a long window; each segment lands once."""
    ordered = sorted(segments, key=lambda s: (s.item, s.start))
    return pack_by_length(ordered, lambda s: s.length, max_frames, max_items)


@dataclass
class FrameCount:
    """Mel frames the encoder ran on: ``useful`` (the segments' own) and ``computed`` (with the padding that the
    transformer blocks computed: none where they ran packed, on a CPU; the two convolutions always see it)."""
    useful: int = 0
    computed: int = 0

    @property
    def overhead(self) -> float:
        """computed / useful: 1.0 means no padding was computed."""
        return self.computed / self.useful if self.useful else 1.0


class S3Tokenizer(nn.Module):
    """One of CosyVoice's S3 speech tokenizers in PyTorch.

    ``quantize(mels, mels_lens)`` gives the tokens the official ONNX file gives at batch 1, for any
    batch: padding is masked exactly, and utterances over 30 s are cut into windows and merged.
    """

    def __init__(self, config: S3Config):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        if config.quantizer == "vq":
            self.quantizer: nn.Module = VectorQuantizer(config.width, config.codebook_size)
        else:
            self.quantizer = FiniteScalarQuantizer(config.width, config.fsq_dim)
        self.compute_dtype = torch.float32
        self.max_frames_per_forward: Optional[int] = None  # None: default_max_frames(self.device)
        self.source = ""  # where the weights came from (file path or name), for logs and provenance
        self.frame_count = FrameCount()  # what quantize() ran, for speed reports; reset by assigning a new one

    @classmethod
    def from_weights(cls, config: S3Config, weights: Dict[str, Tensor]) -> "S3Tokenizer":
        """The model of ``config`` holding ``weights`` (name -> tensor, as ``state_dict()``) as its own
        tensors: built on the meta device, so no random initialisation is computed only to be overwritten
        (about a second of start-up for an official-size model). Names and shapes must fit exactly."""
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(weights, strict=True, assign=True)
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise ValueError(f"weights left without values: {', '.join(left)}")
        return model

    # ------------------------------------------------------------------ set-up
    @property
    def device(self) -> torch.device:
        return self.encoder.conv1.weight.device

    def set_dtype(self, dtype: Optional[torch.dtype], mixed: bool = False) -> "S3Tokenizer":
        """Run the encoder in ``dtype`` (float32, bfloat16, float16); quantizer decisions stay fp32.

        ``mixed``: only the blocks' matrix products and attention run in ``dtype``; the residual stream,
        LayerNorms, convolutions and FSMN stay fp32 (slower than all-``dtype``, fewer tokens differ from fp32).
        """
        dtype = dtype or torch.float32
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"unsupported dtype {dtype}; use float32, bfloat16 or float16")
        mixed = mixed and dtype != torch.float32
        self.encoder.to(torch.float32 if mixed else dtype)
        if mixed:
            for module in self.encoder.blocks.modules():
                if isinstance(module, nn.Linear):
                    module.to(dtype)
        self.quantizer.float()
        self.compute_dtype = torch.float32 if mixed else dtype
        self._forget_reordered_weights()
        return self

    def _forget_reordered_weights(self) -> None:
        """Drop the CPU kernels' reordered copies of the linear weights (``linear.onednn_weight``): a cast or
        move replaces a parameter's data without changing its version, and the old copy would be used."""
        from s3tok.model.linear import forget_reordered

        forget_reordered(m.weight for m in self.modules() if isinstance(m, nn.Linear))

    def _apply(self, fn, *args, **kwargs):
        """``.to(device)`` as any module; a cast (``.bfloat16()``, ``.half()``, ``.float()``, ``.to(dtype)``,
        also of a parent module) is :meth:`set_dtype` of that dtype: the encoder in it, the quantizer fp32.
        float64 and other types are refused, leaving the model as it was."""
        before = self.encoder.conv1.weight.dtype, self.precision
        quantizer = {n: p.detach() for n, p in self.quantizer.named_parameters()}  # fp32, as set_dtype keeps it
        super()._apply(fn, *args, **kwargs)
        self._forget_reordered_weights()
        after = self.encoder.conv1.weight.dtype
        if after != before[0] or self.quantizer_dtype() != torch.float32:
            with torch.no_grad():  # its own fp32 values, not their round trip through the cast's dtype
                for name, param in self.quantizer.named_parameters():
                    param.data = quantizer[name].to(param.device)
            if after not in (torch.float32, torch.bfloat16, torch.float16):
                old_dtype, mixed = _parse_precision(before[1])
                self.set_dtype(old_dtype, mixed)
                raise TypeError(f"the S3 tokenizer runs in float32, bfloat16 or float16, not {after}; it was "
                                f"left in {before[1]} (choose with s3tok.load_model(..., dtype=...) or "
                                "tokenizer.set_dtype())")
            self.set_dtype(after)
        return self

    def quantizer_dtype(self) -> torch.dtype:
        return next((t.dtype for t in self.quantizer.parameters() if t.is_floating_point()), torch.float32)

    @property
    def precision(self) -> str:
        """What ``set_dtype`` chose, read from the weights: float32, bfloat16, bfloat16-mixed, ..."""
        products = next(m.weight.dtype for m in self.encoder.blocks.modules() if isinstance(m, nn.Linear))
        name = str(products).replace("torch.", "")
        return name if products == self.compute_dtype else name + "-mixed"

    def set_sdpa(self, enabled: bool) -> "S3Tokenizer":
        """Use ``scaled_dot_product_attention`` (default) or the explicit softmax path."""
        for block in self.encoder.blocks:
            block.attn.use_sdpa = enabled
        return self

    def freeze(self) -> "S3Tokenizer":
        """Eval mode for good, no gradients: for use as a frozen submodule of a model being trained.

        Its parameters then need no optimizer (filter on ``requires_grad``) and DDP does not sync them;
        the parent's ``.train()`` leaves it in eval mode.
        """
        self._frozen = True
        self.eval()
        self.requires_grad_(False)
        return self

    def compile_encoder(self, **kwargs) -> "S3Tokenizer":
        """``torch.compile`` the encoder in place (``dynamic=True`` by default: lengths vary).

        Parameter names stay the same; the first call of each new shape class pays the compile time.
        """
        kwargs.setdefault("dynamic", True)
        self.encoder.compile(**kwargs)
        return self

    def train(self, mode: bool = True) -> "S3Tokenizer":
        return super().train(False if getattr(self, "_frozen", False) else mode)

    # ------------------------------------------------------------------ inference
    def num_tokens(self, mel_frames: int) -> int:
        return self.config.num_tokens(mel_frames)

    @torch.no_grad()
    def forward_segments(self, mels: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """Encoder + quantizer on one padded batch of at most 30 s items: ``(codes [B, T'], lens [B])``."""
        x = to_device_nowait(mels, self.device).to(self.compute_dtype)
        padded = frames = None  # lengths on the host: decide the padding masks here, not by asking the device
        if lengths.device.type == "cpu":
            frames = lengths.tolist()
            padded = self.encoder.output_padded(frames, mels.shape[-1])
        lengths = to_device_nowait(lengths.to(torch.int64), self.device)
        with exact_fp32(self.device):  # no TF32, no autocast: fp32 tokens as the official fp32 graph
            h, out_lens, rows = self.encoder.hidden(x, lengths, padded=padded, frames=frames)
            codes = self.quantizer(h)  # packed hidden states: no padded frame quantized
        if frames is not None:  # for speed reports; packed rows compute no padding
            self.frame_count.useful += sum(frames)
            self.frame_count.computed += sum(frames) if rows is not None else len(frames) * mels.shape[-1]
        return (codes if rows is None else rows.unpack(codes[:, None])[..., 0]), out_lens

    @torch.no_grad()
    def quantize(self, mels: Tensor, mels_lens: Tensor,
                 max_frames_per_forward: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """Tokens of a batch of log-mels.

        ``mels [B, n_mels, T]`` (zero padded), ``mels_lens [B]``. Returns ``codes [B, T']`` int64
        (padded with 0 after each item's length) and ``codes_lens [B]`` int64, on the input's device.
        """
        check_float(mels, "mels")
        if mels.dim() != 3 or mels.shape[1] != self.config.n_mels:
            raise ValueError(f"mels must be [B, {self.config.n_mels}, T], got {list(mels.shape)}")
        frames = host_lengths(mels_lens, mels.shape[0], "mels_lens")
        check_finite(mels, "mels")  # the lengths are checked in quantize_frames
        codes, lens = self.quantize_frames(mels, frames, max_frames_per_forward)
        return codes.to(mels.device), torch.tensor(lens, dtype=torch.int64).to(mels.device)

    @torch.no_grad()
    def quantize_frames(self, mels: Tensor, frames: Sequence[int],
                        max_frames_per_forward: Optional[int] = None) -> Tuple[Tensor, List[int]]:
        """:meth:`quantize` for a caller that knows the lengths on the host and must not wait for the device:
        ``frames`` are Python ints; returns ``codes [B, T']`` on the model's device (queued, perhaps not yet
        computed) and each item's token count. Nothing in here reads a value back from the device."""
        check_lengths(frames, mels.shape[-1], "mels_lens")
        if not frames:  # an empty batch: no tokens
            return torch.zeros((0, 0), dtype=torch.int64, device=self.device), []
        budget = max(max_frames_per_forward or self.max_frames_per_forward or default_max_frames(self.device), WINDOW)
        cfg = self.config
        per_item = [plan_segments(i, n, cfg.num_tokens, cfg.token_rate) for i, n in enumerate(frames)]
        lens_out = [sum(s.keep_to - s.keep_from for s in segs) for segs in per_item]
        out = torch.zeros((len(frames), max(lens_out)), dtype=torch.int64, device=self.device)
        windowed = {}
        for group in group_segments([s for segs in per_item for s in segs], budget):
            codes = self._forward_group(mels, group, per_item)
            whole = [j for j, seg in enumerate(group) if len(per_item[seg.item]) == 1]
            if whole:  # items of at most 30 s: one indexed copy, zeros past each length
                self._place_whole(out, codes, [group[j] for j in whole], whole)
            for j, seg in enumerate(group):
                if len(per_item[seg.item]) > 1:
                    windowed[(seg.item, seg.start)] = codes[j, seg.keep_from:seg.keep_to]
        for i, segs in enumerate(per_item):
            if len(segs) > 1:
                out[i, :lens_out[i]] = torch.cat([windowed[(i, s.start)] for s in segs])
        return out, lens_out

    def _forward_group(self, mels: Tensor, group: Sequence[Segment],
                       per_item: Sequence[Sequence[Segment]]) -> Tensor:
        """Codes of one forward pass of segments; the batch itself when the group covers it (no copy)."""
        longest = group[0].length
        if covers_batch(group, per_item, mels.shape[-1]):
            batch = mels
        else:
            batch = mels.new_zeros((len(group), mels.shape[1], longest))
            for j, seg in enumerate(group):
                batch[j, :, :seg.length] = mels[seg.item, :, seg.start:seg.start + seg.length]
        lens = torch.tensor([s.length for s in group], dtype=torch.int64)  # on the host
        codes, _ = self.forward_segments(batch, lens)
        return codes

    @staticmethod
    def _place_whole(out: Tensor, codes: Tensor, segs: Sequence[Segment], rows: List[int]) -> None:
        """``out[seg.item, :seg.keep_to] = codes[row, :seg.keep_to]`` for whole items, zeros after; the
        indices go over in one non-blocking copy."""
        n = min(codes.shape[1], out.shape[1])
        index = to_device_nowait(torch.tensor([rows, [s.keep_to for s in segs], [s.item for s in segs]],
                                              dtype=torch.int64), codes.device)
        picked = codes[index[0], :n]
        valid = torch.arange(n, device=codes.device)[None, :] < index[1][:, None]
        out[index[2].to(out.device), :n] = torch.where(valid, picked, torch.zeros((), dtype=picked.dtype,
                                                                                  device=picked.device))

    @torch.no_grad()
    def tokenize_waveform(self, wavs: Union[Tensor, Sequence[Tensor]],
                          wav_lens: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Tokens of 16 kHz waveforms: ``wavs [B, N]`` zero padded with ``wav_lens [B]`` samples, or a list
        of 1-D tensors. The log-mel is computed on the model's device; outputs are on the input's device."""
        from s3tok.data.audio import log_mel_batch  # the front end's mel only: no file I/O here

        if torch.is_tensor(wavs):
            check_float(wavs, "wavs", samples=True)
            if wavs.dim() != 2:
                raise ValueError(f"wavs must be [B, N] (or a list of 1-D tensors), got {list(wavs.shape)}")
            n = (host_lengths(wav_lens, wavs.shape[0], "wav_lens") if wav_lens is not None
                 else [wavs.shape[1]] * wavs.shape[0])
            check_lengths(n, wavs.shape[1], "wav_lens")
            items = [wavs[i, :k] for i, k in enumerate(n)]
            out_device = wavs.device
        else:
            if wav_lens is not None:
                raise ValueError("wav_lens goes with a padded [B, N] tensor, not with a list of waveforms")
            items = list(wavs)
            for i, w in enumerate(items):
                check_float(w, f"wavs item {i}", samples=True)
            out_device = items[0].device if items else self.device
        if not items:  # an empty batch: no tokens
            return (torch.zeros((0, 0), dtype=torch.int64, device=out_device),
                    torch.zeros((0,), dtype=torch.int64, device=out_device))
        mels, mel_lens = log_mel_batch(items, n_mels=self.config.n_mels, device=self.device)
        check_finite(mels, "log-mel of wavs")  # NaN or inf samples on a GPU, or samples far outside [-1, 1]
        codes, lens = self.quantize_frames(mels, mel_lens.tolist())
        return codes.to(out_device), torch.tensor(lens, dtype=torch.int64).to(out_device)


def _parse_precision(name: str) -> Tuple[torch.dtype, bool]:
    """``"bfloat16-mixed"`` -> ``(torch.bfloat16, True)``: :attr:`S3Tokenizer.precision` back to ``set_dtype``."""
    return getattr(torch, name.replace("-mixed", "")), name.endswith("-mixed")


def weight_problems(config: S3Config, weights: dict) -> List[str]:
    """What keeps ``weights`` (name -> tensor) from loading into ``S3Tokenizer(config)``: blocks without
    weights, missing or unexpected names, wrong shapes; empty when they fit. The blocks are compared before
    any module is built, and the model is then built on the meta device, so a configuration claiming
    thousands of blocks costs no memory."""
    prefix = "encoder.blocks."
    blocks = {int(k[len(prefix):].split(".", 1)[0]) for k in weights
              if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()}
    if blocks != set(range(config.depth)):
        return [f"{config.depth} blocks in the graph or configuration, weights for blocks "
                f"{_ranges(sorted(blocks)) or 'none'}"]
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in S3Tokenizer(config).state_dict().items()}
    problems = []
    missing = sorted(k for k in expected if k not in weights)
    unknown = sorted(k for k in weights if k not in expected)
    shapes = sorted(f"{k}: file {list(weights[k].shape)} vs model {list(expected[k])}"
                    for k in expected if k in weights and tuple(weights[k].shape) != expected[k])
    if missing:
        problems.append(f"parameters missing: {', '.join(missing)}")
    if shapes:
        problems.append(f"shape mismatches: {'; '.join(shapes)}")
    if unknown:
        problems.append(f"unexpected parameters: {', '.join(unknown)}")
    return problems


def _ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)
