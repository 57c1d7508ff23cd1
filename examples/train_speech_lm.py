#!/usr/bin/env python3
"""A tiny speech LM trained on S3 tokens computed on the fly, inside the training step.

The tokenizer is a frozen submodule: waveforms go in, the log-mel and the tokens are computed on the
model's device in the same step, and only the LM's parameters are optimised (and synced by DDP).

  python examples/train_speech_lm.py --model ../shared/reference/models/speech_tokenizer_v2_25hz.onnx \
      --wav_dir ../shared/reference/audio --steps 20
  python examples/train_speech_lm.py ... --ddp 2        # 2 processes, gloo backend, CPU
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

import s3tok
from s3tok.data import scan_audio_dir

logger = logging.getLogger("train_speech_lm")


class SpeechLM(nn.Module):
    """Next-token prediction over speech tokens; ``self.tokenizer`` is frozen and never optimised."""

    def __init__(self, tokenizer: s3tok.S3Tokenizer, dim: int = 64):
        super().__init__()
        self.tokenizer = tokenizer.freeze()
        vocab = tokenizer.config.codebook_size
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, vocab)

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        codes, lens = self.tokenizer.tokenize_waveform(wavs, wav_lens)  # ordinary int64 tensors, no grad
        h, _ = self.rnn(self.embed(codes[:, :-1]))
        logits = self.head(h)
        mask = torch.arange(codes.shape[1] - 1, device=codes.device)[None, :] < (lens[:, None] - 1)
        return nn.functional.cross_entropy(logits[mask], codes[:, 1:][mask])


def load_clips(wav_dir: str, seconds: float, limit: int) -> List[torch.Tensor]:
    """16 kHz waveforms of the first ``limit`` clips, cut to at most ``seconds``."""
    out = []
    for e in scan_audio_dir(wav_dir)[:limit]:
        out.append(s3tok.load_audio(e.location)[: int(seconds * 16000)])
    return out


def pad_batch(wavs: Sequence[torch.Tensor]):
    lens = torch.tensor([w.numel() for w in wavs])
    out = torch.zeros(len(wavs), int(lens.max()))
    for i, w in enumerate(wavs):
        out[i, : w.numel()] = w
    return out, lens


def trainable(model: nn.Module) -> List[nn.Parameter]:
    """The parameters to optimise: everything that requires grad (the frozen tokenizer does not)."""
    return [p for p in model.parameters() if p.requires_grad]


def train(model: nn.Module, wavs: Sequence[torch.Tensor], steps: int, lr: float = 3e-3,
          batch_size: int = 4) -> List[float]:
    """Plain training loop with autograd on; returns the loss of each step."""
    opt = torch.optim.AdamW(trainable(model), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        idx = [(step * batch_size + i) % len(wavs) for i in range(batch_size)]
        x, lens = pad_batch([wavs[i] for i in idx])
        loss = model(x, lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        logger.info("step %d loss %.4f", step, losses[-1])
    return losses


def _ddp_worker(rank: int, world: int, port: int, args: argparse.Namespace, out_dir: Optional[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same LM init on every rank (DDP also broadcasts it)
        model = SpeechLM(s3tok.load_model(args.model))
        ddp = nn.parallel.DistributedDataParallel(model)
        wavs = load_clips(args.wav_dir, args.seconds, args.clips)
        shard = wavs[rank::world]  # each rank its own clips
        losses = train(ddp, shard, args.steps, batch_size=args.batch_size)
        if out_dir:
            torch.save({"losses": losses, "lm": {k: v for k, v in model.state_dict().items()
                                                 if not k.startswith("tokenizer.")},
                        "synced": [n for n, p in ddp.module.named_parameters() if p.requires_grad]},
                       os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(args: argparse.Namespace, out_dir: Optional[str] = None) -> None:
    """Spawn ``args.ddp`` processes (gloo); an exception in any rank is raised here."""
    torch.multiprocessing.spawn(_ddp_worker, args=(args.ddp, free_port(), args, out_dir), nprocs=args.ddp,
                                join=True)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="official name, .onnx file or converted folder")
    p.add_argument("--wav_dir", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--clips", type=int, default=8, help="how many clips to train on")
    p.add_argument("--seconds", type=float, default=3.0, help="clip length cap")
    p.add_argument("--ddp", type=int, default=0, help="number of DDP processes (gloo); 0: one process")
    p.add_argument("--out_dir", default=None, help="with --ddp: save each rank's losses and LM weights here")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from s3tok.util.logging_setup import setup_logging

    setup_logging()
    if args.ddp:
        run_ddp(args, args.out_dir)
        return 0
    torch.manual_seed(0)
    model = SpeechLM(s3tok.load_model(args.model))
    losses = train(model, load_clips(args.wav_dir, args.seconds, args.clips), args.steps,
                   batch_size=args.batch_size)
    logger.info("loss %.3f -> %.3f over %d steps", losses[0], losses[-1], len(losses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
