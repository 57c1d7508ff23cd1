"""Kaldi-style data: ``wav.scp`` entries (paths with spaces, ``cmd |`` pipes) and how to open them."""
from .wav_scp import WavEntry, open_wav_entry, read_wav_scp

__all__ = ["WavEntry", "open_wav_entry", "read_wav_scp"]
