"""s3tok: CosyVoice's S3 speech tokenizers in PyTorch, token-exact with the official ONNX files.

The names below are imported on first use, so that light tools (``utils/run.pl``, data-dir checks) start
without loading torch. Importing the package caps oneDNN's caches of ready-made primitives (unless the
environment sets them): they read their size once, at the process's first oneDNN operation, and at their
default size a run whose shapes change with every batch grows for hours (:func:`bound_onednn_caches`).
"""
from importlib import import_module
from typing import Any

from s3tok.util.cpu_memory import bound_onednn_caches
from s3tok.version import __version__

bound_onednn_caches()

_EXPORTS = {
    "available_models": ".api", "load_model": ".api",
    "AudioError": ".data.audio", "load_audio": ".data.audio", "log_mel_spectrogram": ".data.audio", "padding": ".data.audio",
    "S3Config": ".model", "S3Tokenizer": ".model", "keep_freed_memory": ".util.cpu_memory",
}

__all__ = sorted([*_EXPORTS, "__version__", "bound_onednn_caches"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 's3tok' has no attribute {name!r}")


def __dir__():
    return __all__
