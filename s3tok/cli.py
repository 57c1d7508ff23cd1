"""The ``s3tok`` command: ``s3tok <subcommand> [options]``; each subcommand is a ``s3tok.bin`` stage."""
from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# subcommand -> (module with get_parser/main, one-line help)
SUBCOMMANDS = {
    "tokenize": ("s3tok.bin.tokenize", "tokenize a wav.scp or a directory of audio"),
    "models": ("s3tok.bin.models", "list the known official models"),
    "download": ("s3tok.bin.download", "download official models into the cache"),
    "convert": ("s3tok.bin.convert", "convert an ONNX file to safetensors + config.json"),
    "export-onnx": ("s3tok.bin.export_onnx", "write a model (or a random one) as official-layout ONNX"),
    "stats": ("s3tok.bin.stats", "token statistics and warnings of a tokenized set (+ plots)"),
}


def _usage() -> str:
    lines = ["usage: s3tok <subcommand> [options]", "", "subcommands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "'s3tok <subcommand> --help' for its options; 's3tok --version' for the version."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from .version import __version__

        print(f"s3tok {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"s3tok: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
