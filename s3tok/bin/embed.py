"""CAM++ speaker embeddings (192-d, CosyVoice's ``campplus.onnx``) of a data dir, wav.scp or shards.

Writes to ``--output_dir`` ``embedding[.J].{ark,scp}`` (float32 vectors), ``utt2fail[.J]`` and
``embedder[.J].json``; ``.J`` when ``--job J`` of ``--num_jobs N``. A rerun resumes a killed job and skips a
finished one; ``s3tok merge-embeddings`` then writes CosyVoice's ``utt2embedding.pt`` and ``spk2embedding.pt``.
Features as CosyVoice's ``tools/extract_embedding.py`` makes them (channel 0, 16 kHz, Kaldi fbank 80, mean
removed). Engines: ``torch`` (batched, exact masks, weights imported from the ONNX file by its structure),
``onnxruntime`` (batch 1, as CosyVoice), ``auto`` (torch, or onnxruntime with a warning when the file cannot
be imported). Exit codes as ``s3tok tokenize``: 0 done, 1 too many failed, 2 bad input or model, 3 a fault.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from s3tok.bin import add_job_arguments, add_max_duration, job_main, job_utterances, run_and_report
from s3tok.exit_codes import BAD_INPUT
from s3tok.data.sources import add_container_arguments

logger = logging.getLogger("s3tok.embed")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok embed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_dir", help="Kaldi data dir: wav.scp (+ segments)")
    src.add_argument("--wav_scp", help="Kaldi wav.scp: 'key path' or 'key cmd |'")
    src.add_argument("--wav_dir", help="a folder searched recursively for audio")
    add_container_arguments(p, src)
    p.add_argument("--model", default="campplus",
                   help="campplus (the official file, downloaded), a campplus .onnx file, or demo (random weights)")
    p.add_argument("--engine", default="auto", choices=("auto", "torch", "onnxruntime"))
    p.add_argument("--output_dir", required=True)
    p.add_argument("--demo_dir", default="exp/models", help="where --model demo is written")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (torch engine)")
    p.add_argument("--num_workers", type=int, default=2, help="decoding threads")
    p.add_argument("--num_threads", type=int, default=0,
                   help="torch intra-op threads, or onnxruntime sessions run in parallel (0: all cores)")
    p.add_argument("--base_dir", default=None, help="resolve relative wav.scp paths against this directory")
    add_max_duration(p)
    add_job_arguments(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    return job_main(logger, args, argv, "s3tok embed", lambda: _main(args))


def _main(args) -> int:
    from s3tok.modelfiles.campplus_engines import load_embedder
    from s3tok.modelfiles.resolve import resolve_speaker
    from s3tok.stages.embed_job import EMBED, run_embed_job

    try:
        utts = job_utterances(args)
        path = resolve_speaker(args.model, Path(args.demo_dir))
        embedder = load_embedder(path, engine=args.engine, device=args.device,
                                 threads=args.num_threads or torch.get_num_threads())
    except (ValueError, OSError, RuntimeError, ImportError) as e:
        logger.error("%s", e)
        return BAD_INPUT
    logger.info("%s: engine %s; %d utterances%s", path, embedder.engine, len(utts),
                f" (job {args.job} of {args.num_jobs})" if args.num_jobs else "")
    files = EMBED.files(Path(args.output_dir), args.job or None)
    def run():
        return run_embed_job(embedder, utts, files, num_workers=args.num_workers, base_dir=args.base_dir,
                             progress=not args.no_progress, resume=not args.overwrite)

    return run_and_report(logger, run, files["fail"], len(utts), args.max_fail_ratio, "embedded",
                          files.path("embedding", ".part"))


if __name__ == "__main__":
    sys.exit(main())
