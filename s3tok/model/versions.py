"""The official S3 tokenizers, one row each: everything s3tok knows about a version, read by the model
configuration, the download registry, the ONNX importer (how to recognise it) and exporter (its opset)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Version:
    """One official tokenizer."""

    name: str
    # structure (what the ONNX importer recognises, in this order of precedence: quantizer, conv1 stride,
    # LayerNorm spelling)
    quantizer: str  # "vq" (4096 codes) or "fsq" (3^8 codes)
    conv1_stride: int  # 1: 50 Hz tokens, 2: 25 Hz
    layernorm: str  # how the official graph spells LayerNorm: "decomposed" or "fused"
    positional: str  # "table" (learned [1500, width]) or "rotary" (+ FSMN memory)
    depth: int
    # the official file
    filename: str
    sha256: str
    modelscope_repo: str
    hf_repo: str
    opset: int

    @property
    def urls(self) -> Tuple[str, ...]:
        """ModelScope first, the Hugging Face mirror second."""
        return (f"https://www.modelscope.cn/models/{self.modelscope_repo}/resolve/master/{self.filename}",
                f"https://huggingface.co/{self.hf_repo}/resolve/main/{self.filename}")

    @property
    def token_rate(self) -> int:
        return 100 // (2 * self.conv1_stride)


VERSIONS: Dict[str, Version] = {v.name: v for v in (
    Version("speech_tokenizer_v1", "vq", 1, "decomposed", "table", 6, "speech_tokenizer_v1.onnx",
            "23b5a723ed9143aebfd9ffda14ac4c21231f31c35ef837b6a13bb9e5488abb1e",
            "iic/cosyvoice-300m", "FunAudioLLM/CosyVoice-300M", 13),
    Version("speech_tokenizer_v1_25hz", "vq", 2, "decomposed", "table", 6, "speech_tokenizer_v1.onnx",
            "56285ddd4a83e883ee0cb9f8d69c1089b53a94b1f78ff7e4a0224a27eb4cb486",
            "iic/CosyVoice-300M-25Hz", "FunAudioLLM/CosyVoice-300M-25Hz", 13),
    Version("speech_tokenizer_v2_25hz", "fsq", 2, "fused", "rotary", 6, "speech_tokenizer_v2.onnx",
            "d43342aa12163a80bf07bffb94c9de2e120a8df2f9917cd2f642e7f4219c6f71",
            "iic/CosyVoice2-0.5B", "FunAudioLLM/CosyVoice2-0.5B", 17),
    Version("speech_tokenizer_v3_25hz", "fsq", 2, "decomposed", "rotary", 12, "speech_tokenizer_v3.onnx",
            "23236a74175dbdda47afc66dbadd5bcb41303c467a57c261cb8539ad9db9208d",
            "FunAudioLLM/Fun-CosyVoice3-0.5B-2512", "FunAudioLLM/Fun-CosyVoice3-0.5B-2512", 14),
)}

MODEL_NAMES = tuple(VERSIONS)  # in release order


def identify(quantizer: str, conv1_stride: int, layernorm: str) -> Optional[str]:
    """The version a graph's structure names: the quantizer first, then the conv1 stride, then the
    LayerNorm spelling, each consulted only while more than one version is left. None when none fits."""
    left = [v for v in VERSIONS.values() if v.quantizer == quantizer]
    for field, value in (("conv1_stride", conv1_stride), ("layernorm", layernorm)):
        if len(left) > 1:
            narrowed = [v for v in left if getattr(v, field) == value]
            left = narrowed or left
    return left[0].name if len(left) == 1 else None
