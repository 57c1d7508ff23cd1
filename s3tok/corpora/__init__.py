"""Corpus-specific download and preparation (one module per corpus)."""
