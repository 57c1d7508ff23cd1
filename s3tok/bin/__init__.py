"""One entry point per ``s3tok`` subcommand (``get_parser()``, ``main(argv)``), and the options they share."""
from __future__ import annotations

from typing import Callable, List

from s3tok.exit_codes import BAD_INPUT, FAULT, os_fault_line


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


def run_and_report(logger, run, fail_file, total: int, max_fail_ratio: float, done: str, kept: str) -> int:
    """Run one job of a stage (``run()`` returns its ``RunStats``) and turn the outcome into an exit code: bad
    input 2, a fault of the model, machine or disk 3 (``kept`` says where the work so far waits for the rerun),
    more than ``max_fail_ratio`` failed 1; with one summary line (``done``: "tokenized", "embedded")."""
    from s3tok.stages.pipeline import ModelFault

    try:
        stats = run()
    except ValueError as e:
        logger.error("%s", e)
        return BAD_INPUT
    except ModelFault as e:
        logger.error("%s", e)
        return FAULT
    except OSError as e:
        logger.error("%s; the work so far is kept in %s for the rerun", os_fault_line(e), kept)
        return FAULT
    logger.info("%d / %d utterances %s, %d failed (%s); %.1f s of audio in %.1f s: %.1f audio s/s", stats.done,
                total, done, stats.failed, fail_file, stats.audio_seconds, stats.wall_seconds, stats.speed)
    if total and stats.failed / total > max_fail_ratio:
        logger.error("%d / %d failed, above --max_fail_ratio %.3f; reasons in %s", stats.failed, total,
                     max_fail_ratio, fail_file)
        return 1
    return 0


def add_merge_arguments(parser, stage: str) -> None:
    """The options of a merge of ``stage``'s jobs: ``--output_dir`` (the jobs'), ``--num_jobs``, ``--dest``,
    ``--max_fail_ratio``."""
    parser.add_argument("--output_dir", required=True, help=f"the {stage} jobs' --output_dir")
    parser.add_argument("--num_jobs", type=int, required=True, help="how many jobs (0: a single unsplit run)")
    parser.add_argument("--dest", required=True, help="where the merged files go (e.g. data/test)")
    parser.add_argument("--max_fail_ratio", type=float, default=0.05,
                        help="exit 1 when a larger share of utterances failed")


def merged_fail_exit(logger, result, max_fail_ratio: float, fail_file) -> int:
    """1, with one error line, when more than ``max_fail_ratio`` of a merge's utterances failed (``result``
    has ``failed``, ``total`` and ``fail_ratio``); else 0."""
    if result.fail_ratio > max_fail_ratio:
        logger.error("%d / %d failed (%.1f%%), above --max_fail_ratio %.3f; reasons in %s", result.failed,
                     result.total, 100 * result.fail_ratio, max_fail_ratio, fail_file)
        return 1
    return 0


def add_job_arguments(parser) -> None:
    """The options of a resumable stage job: ``--num_jobs/--job`` (a contiguous shard), ``--max_fail_ratio``,
    ``--overwrite``, ``--no_progress``, ``-v``."""
    parser.add_argument("--num_jobs", type=int, default=0, help="split the input into this many contiguous shards")
    parser.add_argument("--job", type=int, default=0, help="which shard (1-based) this process does")
    parser.add_argument("--max_fail_ratio", type=float, default=0.05,
                        help="exit 1 when a larger share of utterances failed")
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    parser.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument("-v", "--verbose", action="count", default=0)


def check_job_arguments(logger, args, argv=None, prog: str = "") -> bool:
    """Log the command (``prog`` and ``argv``, else ``sys.argv``), set torch's threads (``--num_threads``), and
    check ``--num_jobs`` and ``--job`` together (False, logged, otherwise); under torchrun without them, this
    rank's shard."""
    import sys

    import torch

    from s3tok.stages.sharding import distributed_job

    logger.info("command: %s", " ".join(sys.argv if argv is None else [prog, *argv]))
    if getattr(args, "num_threads", 0) > 0:
        torch.set_num_threads(args.num_threads)

    if bool(args.num_jobs) != bool(args.job):
        logger.error("--num_jobs and --job go together (got --num_jobs %s --job %s)", args.num_jobs, args.job)
        return False
    if not args.num_jobs and distributed_job():  # under torchrun: one shard per rank
        args.num_jobs, args.job = distributed_job()
        logger.info("torchrun: rank %d of %d does shard %d", args.job - 1, args.num_jobs, args.job)
    return True


def job_main(logger, args, argv, prog: str, body: Callable[[], int]) -> int:
    """What every stage job does once its options are parsed: log at ``-v``, put ``--max_duration`` in force,
    log the command and check ``--num_jobs``/``--job`` (:func:`check_job_arguments`; exit 2 when they do not
    go together); then ``body()``, whose exit code it returns."""
    from s3tok.util.logging_setup import setup_logging

    setup_logging(args.verbose)
    return within_duration_limit(
        logger, args, lambda: body() if check_job_arguments(logger, args, argv, prog) else BAD_INPUT)


def check_keys(utts, where: str) -> None:
    """Refuse (``ValueError`` naming ``where`` and the key) a key that no table can hold: whitespace, an ASCII
    control character or a Unicode line separator. Lines of ``wav.scp``/``feats.scp``/data dirs are refused
    when read (file and line named); this catches the keys of tar members, parquet rows and audio folders."""
    from s3tok.data.lines import key_problem

    for u in utts:
        bad = key_problem(u.key)
        if bad:
            raise ValueError(f"{where}: {bad}")


def job_utterances(args, num_frames_file=None) -> List:
    """This job's utterances: those of the one source option given (``--data_dir``, ``--wav_scp``,
    ``--wav_dir``, ``--feats_scp``, ``--tar_list``, ``--parquet_list``, whichever the command has), cut to the
    contiguous shard of ``--job`` of ``--num_jobs``. Raises ValueError or OSError for bad input, a key that
    cannot name an utterance included (:func:`check_keys`), before any work."""
    from s3tok.data.sources import container_sources, select_source
    from s3tok.stages.sharding import job_shard

    sources = {name: getattr(args, name, None) for name in ("data_dir", "wav_scp", "wav_dir", "feats_scp")}
    if hasattr(args, "tar_list"):
        sources.update(container_sources(args))
    utts = select_source(**sources)
    check_keys(utts, next((f"--{k} {v}" for k, v in sources.items() if v and not isinstance(v, (bool, tuple))),
                          "the input"))
    return job_shard(utts, args.num_jobs, args.job, num_frames_file) if args.num_jobs else utts
