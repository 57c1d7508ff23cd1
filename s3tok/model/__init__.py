"""The S3 tokenizer models: config, encoder, quantizers, long-audio windows, ``S3Tokenizer``."""
from s3tok.model.config import MODEL_NAMES, S3Config, official_config
from s3tok.model.tokenizer import S3Tokenizer

__all__ = ["MODEL_NAMES", "S3Config", "S3Tokenizer", "official_config"]
