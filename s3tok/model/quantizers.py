"""The two quantizers: v1's 4096-code VQ and v2/v3's 3^8-code FSQ. Decisions are made in fp32."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class VectorQuantizer(nn.Module):
    """L2-normalise, then the nearest of ``codebook_size`` codes in Euclidean distance."""

    def __init__(self, dim: int, codebook_size: int = 4096):
        super().__init__()
        # Stored as in the ONNX graph: [dim, codebook_size].
        self.codebook = nn.Parameter(torch.zeros(dim, codebook_size))

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., D]`` -> codes ``[...]`` int64."""
        x = x.float()
        x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
        c = self.codebook.float()
        dist = x.pow(2).sum(-1, keepdim=True) - (2 * x) @ c + c.pow(2).sum(0)
        return torch.argmin(dist, dim=-1)


class FiniteScalarQuantizer(nn.Module):
    """Project to ``dim`` values, round ``tanh * 0.999`` to {-1, 0, 1}, read the digits in base 3."""

    def __init__(self, width: int, dim: int = 8):
        super().__init__()
        self.project_down = nn.Linear(width, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., D]`` -> codes ``[...]`` int64 in ``[0, 3**dim)``."""
        w = self.project_down.weight.float()
        b = self.project_down.bias.float()
        h = torch.nn.functional.linear(x.float(), w, b)
        digits = torch.round(torch.tanh(h) * 0.999).to(torch.int64) + 1
        # made here, not kept as a buffer: a model built on the meta device (``S3Tokenizer.from_weights``)
        # has only the weights it is given; a device-side power, not a host list, so CUDA never waits
        powers = torch.pow(3, torch.arange(digits.shape[-1], device=digits.device, dtype=torch.int64))
        return (digits * powers).sum(-1)
