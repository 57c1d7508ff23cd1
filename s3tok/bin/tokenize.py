"""Tokenize utterances with an S3 tokenizer: a data dir, a wav.scp, a folder of audio, or a feats.scp.

Writes to ``--output_dir`` ``tokens[.J].{ark,scp,txt}``, ``utt2fail[.J]`` (``key reason`` per utterance
that could not be tokenized; the rest go on) and ``tokenizer[.J].json``; ``.J`` when ``--job J`` of
``--num_jobs N`` (a contiguous shard). A rerun resumes a killed job and skips a finished one.
Exit codes: 0 done; 1 more than ``--max_fail_ratio`` of the utterances failed; 2 bad arguments, input, model
or ``--dtype`` (one this CPU cannot run is refused at load); 3 a fault of the machine, the disk or the model
(disk full, read-only folder, a model that fails on every utterance): the work so far is kept for a rerun.
On CPU it lets malloc keep freed memory for the next forward pass (``S3TOK_KEEP_FREED_MEMORY=0``: not).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from s3tok.api import PRECISIONS, load_model
from s3tok.util.cpu_memory import keep_freed_memory
from s3tok.data.sources import add_container_arguments
from s3tok.bin import add_job_arguments, add_max_duration, job_main, job_utterances, run_and_report
from s3tok.exit_codes import BAD_INPUT
from s3tok.stages.sharding import num_frames_file_for
from s3tok.stages.tokenize_job import job_files, journal_path, run_job

logger = logging.getLogger("s3tok.tokenize")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3tok tokenize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_dir", help="Kaldi data dir: wav.scp (+ segments)")
    src.add_argument("--wav_scp", help="Kaldi wav.scp: 'key path' (spaces allowed) or 'key cmd |'")
    src.add_argument("--wav_dir", help="a folder searched recursively for audio; key = relative path without suffix")
    src.add_argument("--feats_scp", help="log-mels from compute_mel (frames x 128 float32 matrices)")
    add_container_arguments(p, src)
    p.add_argument("--model", required=True,
                   help="official name (downloaded to the cache), .onnx file, or folder from s3tok convert")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--batch_size", type=int, default=None,
                   help="most utterances per batch (default 16 on CPU; on a GPU the frame budget alone decides)")
    p.add_argument("--max_frames_per_batch", type=int, default=None,
                   help="most padded mel frames per forward pass (100 frames = 1 s; default 6000 on CPU, "
                        "48000 on GPU)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=list(PRECISIONS),
                   help="float32 gives the official tokens; bfloat16 is fastest on CPUs with AMX/AVX-512 BF16; "
                        "bfloat16-mixed runs only the matrix products and attention in bf16 (slower, fewer "
                        "tokens differ from float32)")
    p.add_argument("--num_workers", type=int, default=None,
                   help="decoding threads (default 2 on CPU, min(8, cores - 1) on a GPU)")
    p.add_argument("--num_threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--base_dir", default=None, help="resolve relative wav.scp paths against this directory "
                                                   "(default: the current directory)")
    add_max_duration(p)
    add_job_arguments(p)
    return p


def pick_device(name: str) -> torch.device:
    """The device ``--device`` names; plain ``cuda`` under torchrun is ``cuda:LOCAL_RANK``. A CUDA device is
    made the current one, so that what names no device (pinned memory, events, synchronize) uses it too and
    not GPU 0 for every rank. Raises ValueError when CUDA is asked for and absent."""
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA here (torch {torch.__version__}"
                         f"{', a CPU-only build' if torch.version.cuda is None else ', no GPU visible'}); "
                         "use --device cpu")
    rank = os.environ.get("LOCAL_RANK") if device.index is None else None
    if device.index is None:  # torchrun: one GPU per local rank
        device = torch.device("cuda", int(rank) if rank is not None else torch.cuda.current_device())
    torch.cuda.set_device(device)
    logger.info("device %s%s", device, f" (LOCAL_RANK {rank})" if rank is not None else "")
    return device


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    return job_main(logger, args, argv, "s3tok tokenize", lambda: _main(args))


def _main(args) -> int:
    try:
        utts = job_utterances(args, num_frames_file_for(args.data_dir, args.feats_scp))
        device = pick_device(args.device)
        if device.type == "cpu":
            keep_freed_memory()  # no fresh zeroed pages for every forward pass
        model = load_model(args.model, device=device, dtype=args.dtype)
    except (ValueError, OSError, RuntimeError) as e:
        logger.error("%s", e)
        return BAD_INPUT
    cfg = model.config
    logger.info("model %s: %s, %d Hz, %d codes, dtype %s, device %s; %d utterances%s", args.model, cfg.version,
                cfg.token_rate, cfg.codebook_size, args.dtype, device, len(utts),
                f" (job {args.job} of {args.num_jobs})" if args.num_jobs else "")
    files = job_files(Path(args.output_dir), args.job or None)
    def run():
        return run_job(model, utts, files, batch_size=args.batch_size, max_frames_per_batch=args.max_frames_per_batch,
                       num_workers=args.num_workers, base_dir=args.base_dir, device=device,
                       progress=not args.no_progress, resume=not args.overwrite)

    return run_and_report(logger, run, files["fail"], len(utts), args.max_fail_ratio, "tokenized",
                          journal_path(files))


if __name__ == "__main__":
    sys.exit(main())
