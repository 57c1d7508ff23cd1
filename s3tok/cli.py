"""The ``s3tok`` command: ``s3tok <subcommand> [options]``; each subcommand is a ``s3tok.bin`` stage."""
from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# subcommand -> (module with get_parser/main, one-line help)
SUBCOMMANDS = {
    # tokens
    "tokenize": ("s3tok.bin.tokenize", "tokenize a data dir, wav.scp, feats.scp or directory of audio"),
    "compute-mel": ("s3tok.bin.compute_mel", "store the log-mels of a data dir (one job of N)"),
    "merge-mel": ("s3tok.bin.merge_mel", "merge compute-mel jobs into the data dir's feats.scp"),
    "merge-tokens": ("s3tok.bin.merge_tokens", "merge tokenize jobs into a data dir (+ utt2speech_token.pt)"),
    # speaker embeddings and CosyVoice's training data
    "embed": ("s3tok.bin.embed", "CAM++ speaker embeddings (one job of N), as CosyVoice's extract_embedding"),
    "merge-embeddings": ("s3tok.bin.merge_embeddings", "merge embed jobs: utt2embedding.pt, spk2embedding.pt"),
    "make-parquet": ("s3tok.bin.make_parquet", "CosyVoice's training shards (parquet) and data.list from a data dir"),
    # checks
    "score-parity": ("s3tok.bin.score_parity", "onnxruntime at batch 1 against tokens.scp"),
    "stats": ("s3tok.bin.stats", "token statistics and warnings of a tokenized set (+ plots)"),
    # models
    "models": ("s3tok.bin.models", "list the known official models"),
    "download": ("s3tok.bin.download", "download official models into the cache"),
    "convert": ("s3tok.bin.convert", "convert an ONNX file to safetensors + config.json"),
    "export-onnx": ("s3tok.bin.export_onnx", "write a model (or a random one) as official-layout ONNX"),
    "resolve-model": ("s3tok.bin.resolve_model", "a recipe's --model as a local file (name, path or demo)"),
    # data dirs and corpora
    "make-wav-scp": ("s3tok.bin.make_wav_scp", "a wav.scp from a folder of audio"),
    "split-scp": ("s3tok.bin.split_scp", "split an scp into contiguous, exact pieces"),
    "validate-data-dir": ("s3tok.bin.validate_data_dir", "check a Kaldi data dir (sorted, unique, consistent)"),
    "fix-data-dir": ("s3tok.bin.fix_data_dir", "keep the keys present everywhere, as Kaldi's fix_data_dir.sh"),
    "download-aishell": ("s3tok.bin.download_aishell", "download AISHELL-1 (mirrors, MD5, resumable)"),
    "prepare-aishell": ("s3tok.bin.prepare_aishell", "AISHELL-1 data dirs: wav.scp, text, utt2spk, spk2utt"),
    "shard-metadata": ("s3tok.bin.shard_metadata", "text, utt2spk, spk2utt from tar shards' JSON, unpacked nowhere"),
    # jobs
    "run-jobs": ("s3tok.bin.run_jobs", "Kaldi's run.pl / slurm.pl: JOB=1:N log.JOB.log command ..."),
}


def _usage() -> str:
    lines = ["usage: s3tok <subcommand> [options]", "", "subcommands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "'s3tok <subcommand> --help' for its options; 's3tok --version' for the version."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from s3tok.version import __version__

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
