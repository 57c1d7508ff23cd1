"""CAM++ speaker embedding (3D-Speaker's ``CAMPPlus``, as CosyVoice's ``campplus.onnx``), in pure PyTorch.

Parameter names follow 3D-Speaker's module layout (``head.layer1.0.conv1.weight``,
``xvector.block2.tdnnd5.cam_layer.linear_local.weight``, ...). :class:`CampPlus` has two forward paths:

* ``forward(feats)`` (no lengths): the reference batch-1 computation, op for op as 3D-Speaker writes it; this is
  what :mod:`s3tok.modelfiles.campplus_onnx` exports.
* ``forward(feats, lengths)``: a padded batch with exact masks, so that an utterance's embedding does not depend
  on the padding or on the other utterances (zeroed frames before every time convolution, lengths through the
  stride-2 TDNN, masked means, segment pooling over real frames only, masked unbiased std).

:meth:`CampPlus.inference_form` folds every Conv+BatchNorm pair and returns :class:`CampPlusInference`, the same
masked computation with channels-last dense blocks written into one preallocated buffer per block (no concat
copies), for speed.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

Block = Tuple[int, int, int]  # (layers, kernel, dilation)


@dataclass(frozen=True)
class CampPlusConfig:
    """Shape of a CAM++ model; the defaults are CosyVoice's ``campplus.onnx`` (about 7.2 M parameters)."""

    feat_dim: int = 80
    embedding_size: int = 192
    growth_rate: int = 32
    bn_size: int = 4
    init_channels: int = 128
    head_channels: int = 32
    head_blocks: Tuple[int, ...] = (2, 2)
    blocks: Tuple[Block, ...] = ((12, 3, 1), (24, 3, 2), (16, 3, 2))
    seg_len: int = 100
    tdnn_kernel: int = 5
    cam_reduction: int = 2
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "head_blocks", tuple(int(n) for n in self.head_blocks))
        object.__setattr__(self, "blocks", tuple(tuple(int(v) for v in b) for b in self.blocks))
        for name in ("feat_dim", "embedding_size", "growth_rate", "bn_size", "init_channels", "head_channels",
                     "seg_len", "tdnn_kernel", "cam_reduction"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"CampPlusConfig.{name} must be positive, got {getattr(self, name)}")
        if not self.blocks or any(n < 1 or k < 1 or k % 2 == 0 or d < 1 for n, k, d in self.blocks):
            raise ValueError(f"CampPlusConfig.blocks: (layers >= 1, odd kernel, dilation >= 1) each, got {self.blocks}")
        if not self.head_blocks or any(n < 1 for n in self.head_blocks):
            raise ValueError(f"CampPlusConfig.head_blocks must be positive counts, got {self.head_blocks}")
        if self.tdnn_kernel % 2 == 0:
            raise ValueError(f"CampPlusConfig.tdnn_kernel must be odd, got {self.tdnn_kernel}")
        if self.bn_channels % self.cam_reduction:
            raise ValueError("CampPlusConfig: bn_size * growth_rate must be divisible by cam_reduction")

    @property
    def bn_channels(self) -> int:
        return self.bn_size * self.growth_rate

    @property
    def head_freq(self) -> int:
        """Frequency bins after the head (each stride-2 step rounds up)."""
        f = self.feat_dim
        for _ in range(len(self.head_blocks) + 1):
            f = (f + 1) // 2
        return f

    def block_channels(self) -> List[Tuple[int, int]]:
        """``(input channels, output channels after the transit layer)`` of each dense block."""
        out, c = [], self.init_channels
        for n, _, _ in self.blocks:
            full = c + n * self.growth_rate
            out.append((c, full // 2))
            c = full // 2
        return out

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["head_blocks"] = list(self.head_blocks)
        d["blocks"] = [list(b) for b in self.blocks]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "CampPlusConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"CampPlusConfig: unknown fields {sorted(unknown)}")
        return cls(**d)


# ------------------------------------------------------------------------------------------------ modules


def _bn_relu(channels: int, eps: float) -> nn.Sequential:
    return nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(channels, eps=eps), relu=nn.ReLU()))


class _ResBlock(nn.Module):
    """Two 3x3 convolutions with a residual; the first strides the frequency axis."""

    def __init__(self, channels: int, stride: int, eps: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, eps=eps)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=eps)
        self.shortcut = nn.Sequential()
        if stride != 1:
            self.shortcut = nn.Sequential(nn.Conv2d(channels, channels, 1, stride=(stride, 1), bias=False),
                                          nn.BatchNorm2d(channels, eps=eps))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        if mask is not None:
            h = h * mask
        out = self.bn2(self.conv2(h))
        out = out + self.shortcut(x)
        out = F.relu(out)
        return out if mask is None else out * mask


class _Head(nn.Module):
    """FCM: 2-D residual front end over (frequency, time), frequency strided by 2 per layer and at the end."""

    def __init__(self, cfg: CampPlusConfig):
        super().__init__()
        c, eps = cfg.head_channels, cfg.bn_eps
        self.conv1 = nn.Conv2d(1, c, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c, eps=eps)
        for i, n in enumerate(cfg.head_blocks):
            self.add_module(f"layer{i + 1}", nn.Sequential(*[_ResBlock(c, 2 if j == 0 else 1, eps) for j in range(n)]))
        self.n_layers = len(cfg.head_blocks)
        self.conv2 = nn.Conv2d(c, c, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c, eps=eps)

    def layers(self) -> List[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.n_layers)]

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` [B, F, T] -> [B, C * F', T]; ``mask`` [B, 1, 1, T] zeroes padded frames."""
        x = x.unsqueeze(1)
        out = F.relu(self.bn1(self.conv1(x)))
        if mask is not None:
            out = out * mask
        for layer in self.layers():
            for block in layer:
                out = block(out, mask)
        out = F.relu(self.bn2(self.conv2(out)))
        if mask is not None:
            out = out * mask
        shape = out.shape
        return out.reshape(shape[0], shape[1] * shape[2], shape[3])


class _Tdnn(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, eps: float):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, kernel, stride=2, padding=(kernel - 1) // 2, bias=False)
        self.nonlinear = _bn_relu(cout, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


def _seg_pool_plain(x: torch.Tensor, seg_len: int) -> torch.Tensor:
    """3D-Speaker's segment average pooling (ceil mode: the last partial segment averages its frames)."""
    seg = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)
    shape = seg.shape
    seg = seg.unsqueeze(-1).expand(*shape, seg_len).reshape(*shape[:-1], -1)
    return seg[..., :x.shape[-1]]


def _seg_sums(x: torch.Tensor, seg_len: int, time_dim: int) -> Tuple[torch.Tensor, int]:
    """Sums over consecutive ``seg_len`` frames along ``time_dim`` (1 or 2 of a 3-D tensor), zero-padded at the
    end: ``(sums with the time axis replaced by segments, number of segments)``."""
    t = x.shape[time_dim]
    n_seg = -(-t // seg_len)
    pad = n_seg * seg_len - t
    if time_dim == 2:
        xp = F.pad(x, (0, pad)) if pad else x
        return xp.reshape(x.shape[0], x.shape[1], n_seg, seg_len).sum(-1), n_seg
    xp = F.pad(x, (0, 0, 0, pad)) if pad else x
    return xp.reshape(x.shape[0], n_seg, seg_len, x.shape[2]).sum(2), n_seg


def _seg_counts(lengths: torch.Tensor, n_seg: int, seg_len: int) -> torch.Tensor:
    """Real frames in each segment of each utterance, [B, n_seg] (at least 1, to divide by)."""
    starts = torch.arange(n_seg, device=lengths.device) * seg_len
    return (lengths[:, None] - starts[None, :]).clamp(1, seg_len)


class _CamLayer(nn.Module):
    """Context-aware masking: a local dilated convolution gated by utterance + segment context."""

    def __init__(self, cfg: CampPlusConfig, kernel: int, dilation: int):
        super().__init__()
        bn = cfg.bn_channels
        self.linear_local = nn.Conv1d(bn, cfg.growth_rate, kernel, padding=(kernel - 1) // 2 * dilation,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn, bn // cfg.cam_reduction, 1)
        self.relu = nn.ReLU()
        self.linear2 = nn.Conv1d(bn // cfg.cam_reduction, cfg.growth_rate, 1)
        self.sigmoid = nn.Sigmoid()
        self.seg_len = cfg.seg_len

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = self.linear_local(x)
        if lengths is None:
            context = x.mean(-1, keepdim=True) + _seg_pool_plain(x, self.seg_len)
        else:  # x is zero on padded frames
            sums, n_seg = _seg_sums(x, self.seg_len, 2)
            seg = sums / _seg_counts(lengths, n_seg, self.seg_len)[:, None, :].to(x.dtype)
            mean = sums.sum(-1, keepdim=True) / lengths[:, None, None].to(x.dtype)
            context = (seg + mean).repeat_interleave(self.seg_len, dim=2)[..., :x.shape[-1]]
        m = self.sigmoid(self.linear2(self.relu(self.linear1(context))))
        return y * m


class _DenseLayer(nn.Module):
    def __init__(self, cfg: CampPlusConfig, cin: int, kernel: int, dilation: int):
        super().__init__()
        self.nonlinear1 = _bn_relu(cin, cfg.bn_eps)
        self.linear1 = nn.Conv1d(cin, cfg.bn_channels, 1, bias=False)
        self.nonlinear2 = _bn_relu(cfg.bn_channels, cfg.bn_eps)
        self.cam_layer = _CamLayer(cfg, kernel, dilation)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.nonlinear2(self.linear1(self.nonlinear1(x)))
        if mask is not None:
            h = h * mask
        return self.cam_layer(h, lengths)


class _DenseBlock(nn.Module):
    def __init__(self, cfg: CampPlusConfig, cin: int, n: int, kernel: int, dilation: int):
        super().__init__()
        for i in range(n):
            self.add_module(f"tdnnd{i + 1}", _DenseLayer(cfg, cin + i * cfg.growth_rate, kernel, dilation))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x, lengths, mask)], dim=1)
        return x


class _Transit(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.nonlinear = _bn_relu(cin, eps)
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class _Dense(nn.Module):
    """1x1 convolution to the embedding, then BatchNorm without affine parameters."""

    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)
        self.nonlinear = nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(cout, eps=eps, affine=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


def _masked_stats(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean and unbiased std over time, concatenated: [B, C, T] -> [B, 2C]."""
    if lengths is None:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)
    n = lengths[:, None].to(x.dtype)
    mask = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]
    mean = (x * mask).sum(-1) / n
    var = (((x - mean[..., None]) * mask) ** 2).sum(-1) / (n - 1)
    return torch.cat([mean, var.sqrt()], dim=-1)


def _time_mask(lengths: torch.Tensor, t: int, dtype: torch.dtype) -> torch.Tensor:
    return (torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]).to(dtype)


class CampPlus(nn.Module):
    """CAM++: ``forward(feats [B, T, feat_dim], lengths [B] | None) -> [B, embedding_size]``."""

    def __init__(self, config: Optional[CampPlusConfig] = None):
        super().__init__()
        cfg = config or CampPlusConfig()
        self.config = cfg
        self.head = _Head(cfg)
        self.xvector = nn.Module()
        self.xvector.add_module("tdnn", _Tdnn(cfg.head_channels * cfg.head_freq, cfg.init_channels, cfg.tdnn_kernel,
                                              cfg.bn_eps))
        for i, ((n, k, d), (cin, cout)) in enumerate(zip(cfg.blocks, cfg.block_channels())):
            self.xvector.add_module(f"block{i + 1}", _DenseBlock(cfg, cin, n, k, d))
            self.xvector.add_module(f"transit{i + 1}", _Transit(cin + n * cfg.growth_rate, cout, cfg.bn_eps))
        channels = cfg.block_channels()[-1][1]
        self.xvector.add_module("out_nonlinear", _bn_relu(channels, cfg.bn_eps))
        self.xvector.add_module("dense", _Dense(2 * channels, cfg.embedding_size, cfg.bn_eps))
        self.random_init = False
        self.source = ""

    def blocks(self) -> List[Tuple[_DenseBlock, _Transit]]:
        return [(getattr(self.xvector, f"block{i + 1}"), getattr(self.xvector, f"transit{i + 1}"))
                for i in range(len(self.config.blocks))]

    def forward(self, feats: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Embeddings of ``feats`` [B, T, feat_dim]; with ``lengths`` [B], frames from ``lengths[b]`` on are
        padding and are ignored exactly."""
        x = feats.permute(0, 2, 1)
        if lengths is None:
            return self._forward_plain(x)
        lengths = lengths.to(device=feats.device, dtype=torch.long)
        mask = _time_mask(lengths, x.shape[-1], x.dtype)
        x = self.head(x * mask[:, None, :], mask[:, None, None, :])
        x = self.xvector.tdnn(x)
        lengths = (lengths + 1) // 2  # kernel 5, stride 2, padding 2
        mask = _time_mask(lengths, x.shape[-1], x.dtype)[:, None, :]
        x = x * mask
        for block, transit in self.blocks():
            x = transit(block(x, lengths, mask))
        x = self.xvector.out_nonlinear(x)
        return self.xvector.dense(_masked_stats(x, lengths))

    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        x = self.xvector.tdnn(self.head(x))
        for block, transit in self.blocks():
            x = transit(block(x))
        x = self.xvector.out_nonlinear(x)
        return self.xvector.dense(_masked_stats(x, None))

    @torch.no_grad()
    def inference_form(self) -> "CampPlusInference":
        """The same masked computation with every Conv+BatchNorm folded (eval statistics)."""
        return CampPlusInference(self)


# ------------------------------------------------------------------------------------------ inference form


def _bn_affine(bn: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of an eval-mode BatchNorm."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _fold(conv: nn.Module, bn: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (computed in float64)."""
    scale, shift = _bn_affine(bn)
    w = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    b = shift if conv.bias is None else shift + conv.bias.double() * scale
    return w.float().contiguous(), b.float().contiguous()


class CampPlusInference(nn.Module):
    """Folded, channels-last CAM++ for batched inference; same inputs and outputs as :class:`CampPlus`."""

    def __init__(self, model: CampPlus):
        super().__init__()
        cfg = model.config
        self.config = cfg
        head = model.head
        self.head_convs: List[Tuple[torch.Tensor, torch.Tensor]] = [_fold(head.conv1, head.bn1)]
        self.head_blocks: List[Dict[str, Any]] = []
        for layer in head.layers():
            for blk in layer:
                entry = {"stride": blk.conv1.stride[0], "c1": _fold(blk.conv1, blk.bn1),
                         "c2": _fold(blk.conv2, blk.bn2),
                         "sc": _fold(blk.shortcut[0], blk.shortcut[1]) if len(blk.shortcut) else None}
                self.head_blocks.append(entry)
        self.head_out = _fold(head.conv2, head.bn2)
        tdnn = model.xvector.tdnn
        self.tdnn = _fold(tdnn.linear, tdnn.nonlinear.batchnorm)
        self.tdnn_pad = tdnn.linear.padding[0]
        self.dense_blocks = []
        for (block, transit), (n, k, d) in zip(model.blocks(), cfg.blocks):
            layers = []
            for layer in block.children():
                s1, b1 = _bn_affine(layer.nonlinear1.batchnorm)
                w1, bias1 = _fold(layer.linear1, layer.nonlinear2.batchnorm)
                cam = layer.cam_layer
                wl = cam.linear_local.weight  # [g, bn, k]
                layers.append({
                    "s1": s1.float(), "b1": b1.float(),
                    "w1": w1[:, :, 0].t().contiguous(), "bias1": bias1,
                    "wl": wl.permute(1, 2, 0).reshape(wl.shape[1], -1).contiguous(),  # [bn, k * g]
                    "wc1": cam.linear1.weight[:, :, 0].t().contiguous(), "bc1": cam.linear1.bias.detach().clone(),
                    "wc2": cam.linear2.weight[:, :, 0].t().contiguous(), "bc2": cam.linear2.bias.detach().clone(),
                })
            st, bt = _bn_affine(transit.nonlinear.batchnorm)
            self.dense_blocks.append({"kernel": k, "dilation": d, "layers": layers, "ts": st.float(),
                                      "tb": bt.float(), "tw": transit.linear.weight[:, :, 0].t().contiguous()})
        so, bo = _bn_affine(model.xvector.out_nonlinear.batchnorm)
        self.out_scale, self.out_shift = so.float(), bo.float()
        dw, db = _fold(model.xvector.dense.linear, model.xvector.dense.nonlinear.batchnorm)
        self.dense_w, self.dense_b = dw[:, :, 0].t().contiguous(), db
        self._device = torch.device("cpu")

    def to(self, device) -> "CampPlusInference":  # type: ignore[override]
        """Move every folded tensor to ``device``."""
        dev = torch.device(device)

        def move(v):
            if isinstance(v, torch.Tensor):
                return v.to(dev)
            if isinstance(v, dict):
                return {k: move(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return type(v)(move(x) for x in v)
            return v

        for name in ("head_convs", "head_blocks", "head_out", "tdnn", "dense_blocks", "out_scale", "out_shift",
                     "dense_w", "dense_b"):
            setattr(self, name, move(getattr(self, name)))
        self._device = dev
        return self

    @torch.no_grad()
    def forward(self, feats: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, t, _ = feats.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=feats.device)
        lengths = lengths.to(device=feats.device, dtype=torch.long)
        x = self._head(feats, lengths)
        w, bias = self.tdnn
        x = F.relu_(F.conv1d(x, w, bias, stride=2, padding=self.tdnn_pad))
        lengths = (lengths + 1) // 2
        mask = _time_mask(lengths, x.shape[-1], x.dtype)[:, :, None]  # [B, T, 1]
        x = x.transpose(1, 2)  # [B, T, C]
        for blk in self.dense_blocks:
            x = self._dense_block(x, blk, lengths, mask)
        x = torch.addcmul(self.out_shift, x, self.out_scale).relu_().mul_(mask)
        n = lengths[:, None].to(x.dtype)
        mean = x.sum(1) / n
        var = ((x - mean[:, None, :]).mul_(mask) ** 2).sum(1) / (n - 1)
        stats = torch.cat([mean, var.sqrt()], dim=-1)
        return torch.addmm(self.dense_b, stats, self.dense_w)

    def _head(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, t, _ = feats.shape
        mask = _time_mask(lengths, t, feats.dtype)[:, None, None, :]
        x = (feats.transpose(1, 2)[:, None] * mask).contiguous(memory_format=torch.channels_last)
        w, bias = self.head_convs[0]
        x = F.relu_(F.conv2d(x, w, bias, padding=1)).mul_(mask)
        for e in self.head_blocks:
            s = e["stride"]
            h = F.relu_(F.conv2d(x, *e["c1"], stride=(s, 1), padding=1)).mul_(mask)
            out = F.conv2d(h, *e["c2"], padding=1)
            out += x if e["sc"] is None else F.conv2d(x, *e["sc"], stride=(s, 1))
            x = F.relu_(out).mul_(mask)
        x = F.relu_(F.conv2d(x, *self.head_out, stride=(2, 1), padding=1)).mul_(mask)
        return x.reshape(b, x.shape[1] * x.shape[2], t)

    def _dense_block(self, x: torch.Tensor, blk: Dict[str, Any], lengths: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
        b, t, c0 = x.shape
        layers = blk["layers"]
        g = self.config.growth_rate
        d, k = blk["dilation"], blk["kernel"]
        seg_len = self.config.seg_len
        buf = x.new_empty(b, t, c0 + len(layers) * g)
        buf[..., :c0] = x
        counts = None
        c = c0
        for p in layers:
            a = torch.addcmul(p["b1"], buf[..., :c], p["s1"]).relu_()
            h = torch.addmm(p["bias1"], a.view(b * t, c), p["w1"]).relu_().view(b, t, -1).mul_(mask)
            z = torch.mm(h.view(b * t, -1), p["wl"]).view(b, t, k, g)
            y = z[:, :, (k - 1) // 2].clone()
            for j in range(k):
                off = (j - (k - 1) // 2) * d  # tap j reads frame t + off
                if j == (k - 1) // 2 or abs(off) >= t:
                    continue
                if off < 0:
                    y[:, -off:] += z[:, :off, j]
                else:
                    y[:, :-off] += z[:, off:, j]
            sums, n_seg = _seg_sums(h, seg_len, 1)  # [B, S, bn]
            if counts is None:
                counts = _seg_counts(lengths, n_seg, seg_len).to(h.dtype)[:, :, None]
            ctx = sums / counts + sums.sum(1, keepdim=True) / lengths[:, None, None].to(h.dtype)
            gate = torch.sigmoid(torch.baddbmm(p["bc2"], torch.baddbmm(p["bc1"], ctx, p["wc1"].expand(b, -1, -1))
                                               .relu_(), p["wc2"].expand(b, -1, -1)))
            gate = gate.repeat_interleave(seg_len, dim=1)[:, :t]
            torch.mul(y, gate, out=y)
            buf[..., c:c + g] = y
            c += g
        a = torch.addcmul(blk["tb"], buf, blk["ts"]).relu_()
        return torch.mm(a.view(b * t, c), blk["tw"]).view(b, t, -1)


# ------------------------------------------------------------------------------------------------ random


def _pseudo_features(noise: torch.Tensor) -> torch.Tensor:
    """Feature-like input from white noise ``[B, 1, T + 4, D + 2]``: smoothed over 5 frames and 3 bins (speech
    features are correlated in time and frequency; statistics measured on white noise leave a real utterance's
    embedding hundreds of times too large), about 5 in scale as mean-normalised fbank is, mean over time 0."""
    x = torch.nn.functional.conv2d(noise, torch.full((1, 1, 5, 3), 1.0 / 15 ** 0.5))[:, 0] * 5.0
    return x - x.mean(dim=1, keepdim=True)


@torch.no_grad()
def random_campplus(seed: int = 0, config: Optional[CampPlusConfig] = None) -> CampPlus:
    """A CAM++ with random weights, deterministic for ``seed``: Kaiming-normal convolutions, BatchNorm
    statistics measured on pseudo features (so activations stay near unit scale) and then perturbed, affine
    BatchNorm parameters ``1 + N(0, 0.1)`` and ``N(0, 0.1)``. For demos and tests; its embeddings mean nothing."""
    cfg = config or CampPlusConfig()
    gen = torch.Generator().manual_seed(int(seed))
    model = CampPlus(cfg)

    def normal(shape, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=gen, dtype=torch.float32) * std + mean

    for name, p in model.named_parameters():
        if name.endswith("batchnorm.weight") or ".bn" in name and name.endswith("weight") \
                or name.endswith("shortcut.1.weight"):
            p.copy_(normal(p.shape, 0.1, 1.0))
        elif p.dim() == 1:
            p.copy_(normal(p.shape, 0.1))
        else:
            fan_in = p[0].numel()
            p.copy_(normal(p.shape, (2.0 / fan_in) ** 0.5))
    # BatchNorm statistics from one pass in training mode over pseudo features, then perturbed.
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass sets the batch statistics
    model.train()
    model(_pseudo_features(normal((4, 1, 300 + 4, cfg.feat_dim + 2), 1.0)))
    model.eval()
    # Four pseudo utterances barely differ: the embedding BatchNorm's variance is the mean second moment over all
    # dimensions, so that embeddings stay near unit scale and no dimension amplifies rounding.
    final = model.xvector.dense.nonlinear.batchnorm
    final.running_var.fill_(float((final.running_var + final.running_mean ** 2).mean()))
    for m in bns:
        std = m.running_var.clamp_min(1e-4).sqrt()
        m.running_mean.add_(normal(m.running_mean.shape, 0.05) * std)
        m.running_var.mul_(torch.exp(normal(m.running_var.shape, 0.1)))
        m.momentum = 0.1
    model.random_init = True
    model.source = f"random:campplus:seed={seed}"
    return model
