"""Everything a user can cause, as one family of errors, and the exit codes the CLI ends with.

Each error's message is one line of advice: what is wrong, in the user's flags and files, and
what to do. OS and FFmpeg failures that a user can cause (a full disk, a read-only folder, an
option FFmpeg rejects) are translated into these where they happen; the CLI catches
`VsrppError` only, so anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from enum import IntEnum
from pathlib import Path


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1  # the run failed: bad input, a full disk, a damaged checkpoint...
    USAGE = 2  # the command line itself is wrong (click uses 2 for its own usage errors too)
    INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT
    TERMINATED = 143  # SIGTERM: 128 + SIGTERM


class VsrppError(Exception):
    """Something the user can fix; the message says what and how."""

    exit_status = ExitStatus.ERROR


class UsageError(VsrppError):
    """Options that do not make sense together, or a value out of range."""

    exit_status = ExitStatus.USAGE


class InputError(VsrppError):
    """An input that cannot be read; the message says why and what to do."""


class OutputError(VsrppError):
    """An output that cannot be written as asked; the message says what to do."""


class EncoderError(OutputError):
    """Encoder settings (codec, preset, CRF, pixel format, container) that do not go together."""

    exit_status = ExitStatus.USAGE


class DiskFullError(OutputError):
    """No space left where vsrpp writes; what is finished is kept for --resume."""


class CheckpointError(VsrppError):
    """A checkpoint that cannot be used; the message says why and what to do."""


class ZooError(VsrppError):
    """A model that cannot be had as asked; the message says what to do."""


class ResumeError(VsrppError):
    """A partial run that cannot be continued as asked; the message says what to do."""


class EvalError(VsrppError):
    """A data root that lacks what the dataset needs; the message names what is missing."""


class DataError(VsrppError):
    """A data root that lacks what training needs; the message names what is missing."""


class WorkerError(VsrppError):
    """A worker process of a shared run stopped; what it finished is kept for --resume.
    `before_start`: every worker ended before its first sign of life."""

    def __init__(self, message: str, before_start: bool = False) -> None:
        super().__init__(message)
        self.before_start = before_start


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: unwinds like KeyboardInterrupt, so every `finally` cleans up."""

    def __init__(self, exit_status: ExitStatus) -> None:
        super().__init__(exit_status.name.lower())
        self.exit_status = exit_status


def os_error_advice(error: OSError, folder: Path, what: str, kept: bool = True) -> VsrppError | None:
    """The user's view of an OS failure while writing `what` into `folder`, or None when it is
    not one a user can fix (then it stays a bug with its traceback). `kept`: whether finished
    work stays for --resume (a run that failed before finishing anything has none)."""
    again = (
        "finished work is kept: {fix} and run the same command with --resume"
        if kept
        else ("nothing was finished yet: {fix} and run the command again")
    )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left in {folder} while writing {what}; " + again.format(fix="free some space"))
    if error.errno == errno.EFBIG:
        return DiskFullError(
            f"a file in {folder} grew past what its file system (FAT32: 4 GB) or `ulimit -f` allows while "
            f"writing {what}; " + again.format(fix="raise the limit")
        )
    if error.errno == errno.EROFS:
        return OutputError(f"{folder} is on a read-only file system; choose an output elsewhere")
    if error.errno in (errno.EACCES, errno.EPERM):
        return OutputError(f"no permission to write {what} in {folder}; choose an output you can write")
    return None
