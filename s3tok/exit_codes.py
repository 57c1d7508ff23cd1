"""Exit codes shared by every s3tok command (README: "Exit codes"), and the one-line message of an
operating-system fault."""
from __future__ import annotations

import errno

OK = 0
#: More utterances failed than ``--max_fail_ratio`` allows, or a check failed (parity, ``stats
#: --fail_on_warning``, ``validate_data_dir``): the data needs a look.
FAILED = 1
#: Bad arguments, input files, model file or ``--dtype``: fix the command and rerun.
BAD_INPUT = 2
#: The machine, the disk or the model failed (disk full, read-only folder, no such device, a model that
#: fails on every utterance): not the data's fault; the work done so far is kept for the rerun.
FAULT = 3

#: Errors that only a full, read-only or failing disk raises: a fault wherever they come from (``s3tok convert``
#: tells these from the other OSErrors of a command, such as a refused output folder or an unreadable input).
DISK_FAULTS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO)

_HINTS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
          errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded", errno.EIO: "I/O error"}


def os_fault_line(e: OSError) -> str:
    """``cannot write PATH: cause`` in one line, whatever raised it."""
    where = e.filename or "a file"
    cause = _HINTS.get(e.errno or -1) or e.strerror or str(e)
    detail = f" ({e.strerror})" if e.strerror and e.strerror != cause else ""
    return f"cannot write {where}: {cause}{detail}"


def report(logger, e: Exception) -> int:
    """Log ``e`` as one error line and return its exit code: :data:`BAD_INPUT` for bad input (``ValueError``,
    a missing file), :data:`FAULT` for any other operating-system error (the path and cause named)."""
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
        logger.error("%s", os_fault_line(e))
        return FAULT
    logger.error("%s", e)
    return BAD_INPUT
