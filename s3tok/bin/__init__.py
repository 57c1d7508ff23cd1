"""One entry point per ``s3tok`` subcommand (``get_parser()``, ``main(argv)``), and the options they share."""
from __future__ import annotations

from s3tok.exit_codes import BAD_INPUT


def add_max_duration(parser) -> None:
    """The ``--max_duration`` option of the stages that decode audio."""
    from s3tok.data.audio import MAX_DURATION

    parser.add_argument("--max_duration", type=float, default=MAX_DURATION,
                        help="seconds; a longer utterance fails (to utt2fail) before its samples are allocated, "
                             "and a wav.scp pipe may write at most what that much 48 kHz stereo audio takes "
                             f"(default {MAX_DURATION:.0f})")


def within_duration_limit(logger, args, body) -> int:
    """Run ``body()`` under ``args.max_duration`` (see :func:`add_max_duration`); the caller's limit comes back
    afterwards. A limit that is not positive is bad input."""
    from s3tok.data.audio import duration_limit

    if not args.max_duration > 0:
        logger.error("--max_duration must be positive, got %s", args.max_duration)
        return BAD_INPUT
    with duration_limit(args.max_duration):
        return body()
