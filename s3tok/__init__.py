"""s3tok: CosyVoice's S3 speech tokenizers in PyTorch, token-exact with the official ONNX files."""
from .api import available_models, load_model
from .audio import AudioError, load_audio, log_mel_spectrogram, padding
from .model import S3Config, S3Tokenizer
from .version import __version__

__all__ = [
    "AudioError", "S3Config", "S3Tokenizer", "__version__", "available_models", "load_audio",
    "load_model", "log_mel_spectrogram", "padding",
]
