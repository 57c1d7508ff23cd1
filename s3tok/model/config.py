"""Configuration of one S3 tokenizer: everything that differs between the four official models."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Dict

from s3tok.model.versions import MODEL_NAMES, VERSIONS

#: Upper bounds on every size a model file or a converted folder's config.json can claim. The official models
#: are far below them (width 1280, 20 heads, 6 blocks, 128 mels, 6561 codes); a crafted graph or config naming
#: block 10**9 is refused here, before anything sized by it is allocated.
LIMITS: Dict[str, int] = {"width": 8192, "heads": 256, "depth": 256, "n_mels": 1024, "conv1_stride": 16,
                          "conv2_stride": 16, "max_positions": 1 << 20, "fsmn_kernel": 1025,
                          "codebook_size": 1 << 20, "fsq_dim": 32}


@dataclass(frozen=True)
class S3Config:
    """Shape and behaviour of an S3 tokenizer encoder and quantizer.

    ``version`` is one of :data:`MODEL_NAMES`; it is derived from the graph's content by the
    ONNX importer (conv1 stride, quantizer kind, LayerNorm form), never from a file name.
    """

    version: str
    width: int = 1280
    heads: int = 20
    depth: int = 6
    n_mels: int = 128
    conv1_stride: int = 1
    conv2_stride: int = 2
    positional: str = "table"  # "table" (v1: learned [max_positions, width]) or "rotary" (v2, v3)
    max_positions: int = 1500
    fsmn: bool = False
    fsmn_kernel: int = 31
    rope_theta: float = 10000.0
    quantizer: str = "vq"  # "vq" (4096 codes) or "fsq" (3^8 codes)
    codebook_size: int = 4096
    fsq_dim: int = 8
    ln_eps: float = 1e-5
    layernorm: str = "decomposed"  # how the ONNX graph spells LayerNorm: "decomposed" or "fused"

    def __post_init__(self) -> None:
        for name in ("width", "heads", "depth", "n_mels", "conv1_stride", "conv2_stride", "max_positions",
                     "fsmn_kernel", "codebook_size", "fsq_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            if value > LIMITS[name]:
                raise ValueError(f"{name} {value} is larger than s3tok accepts (at most {LIMITS[name]}); "
                                 f"a damaged or crafted model")
        if self.version not in MODEL_NAMES:
            raise ValueError(f"unknown model version {self.version!r}; known: {', '.join(MODEL_NAMES)}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        if self.positional not in ("table", "rotary"):
            raise ValueError(f"unknown positional kind {self.positional!r}")
        if self.quantizer not in ("vq", "fsq"):
            raise ValueError(f"unknown quantizer kind {self.quantizer!r}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def stride(self) -> int:
        """Mel frames per token (2 for 50 Hz, 4 for 25 Hz)."""
        return self.conv1_stride * self.conv2_stride

    @property
    def token_rate(self) -> int:
        """Tokens per second of audio (mel frames are 100 per second)."""
        return 100 // self.stride

    def num_tokens(self, mel_frames: int) -> int:
        """Token count of an utterance of ``mel_frames`` frames (each conv: ``(L - 1) // s + 1``)."""
        n = mel_frames
        for s in (self.conv1_stride, self.conv2_stride):
            n = (n - 1) // s + 1
        return n

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "S3Config":
        if not isinstance(d, dict):
            raise ValueError(f"a model configuration is a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown S3Config fields: {unknown}")
        return cls(**d)


def official_config(version: str, width: int = 1280, heads: int = 20, depth: int = 0) -> S3Config:
    """The configuration of an official model (``depth`` 0 means the official depth), from its row in
    :data:`s3tok.model.versions.VERSIONS`."""
    if version not in VERSIONS:
        raise ValueError(f"unknown model version {version!r}; known: {', '.join(MODEL_NAMES)}")
    v = VERSIONS[version]
    rotary = v.positional == "rotary"
    return S3Config(version, width, heads, depth or v.depth, conv1_stride=v.conv1_stride, positional=v.positional,
                    fsmn=rotary, quantizer=v.quantizer, codebook_size=4096 if v.quantizer == "vq" else 3 ** 8,
                    layernorm=v.layernorm)
