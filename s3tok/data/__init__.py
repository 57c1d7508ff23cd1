"""Kaldi-style data: ``wav.scp`` entries (paths with spaces, ``cmd |`` pipes) and how to open them."""
from s3tok.data.wav_scp import AUDIO_SUFFIXES, WavEntry, open_wav_entry, read_wav_scp, scan_audio_dir, write_wav_scp

__all__ = ["AUDIO_SUFFIXES", "WavEntry", "open_wav_entry", "read_wav_scp", "scan_audio_dir", "write_wav_scp"]
