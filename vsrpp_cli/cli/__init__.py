"""The `vsrpp` command line: `definition.py` says what it accepts, `core.py` what each command
does, `output.py` how results look; the work is the library's. `run` turns what a user can
cause into one line and an exit code."""

from __future__ import annotations

import signal
import sys
from types import FrameType

from ..errors import ExitStatus, Interrupted, VsrppError
from .core import state
from .definition import app, click_group
from .output import error_line, stderr


def main() -> None:
    # Ctrl-C and SIGTERM unwind the same way, through every `finally`: partial files go, finished
    # work stays for --resume. (click would turn KeyboardInterrupt into "Aborted!" and exit 1.)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(run())


def run(args: list[str] | None = None) -> int:
    """The command line `args` (default: this process's), run to an exit status; what a user
    caused is one line on stderr (a traceback only with --debug)."""
    state.debug, state.on_interrupt = False, ""
    try:
        result = click_group()(args=args, prog_name="vsrpp", standalone_mode=False)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else ExitStatus.OK if done.code is None else 1
    except VsrppError as error:
        if state.debug:
            raise
        error_line(str(error))
        return error.exit_status
    except Interrupted as interruption:
        if state.debug:
            raise
        stderr.print(f"[yellow]{interruption}[/]{state.on_interrupt}", highlight=False, soft_wrap=True)
        return interruption.exit_status
    except Exception as error:
        if not _is_usage_error(error):
            raise
        if type(error).__name__ == "NoArgsIsHelpError":  # `vsrpp` alone: the help is the answer
            error.show()
            return ExitStatus.OK
        command = error.ctx.command_path if getattr(error, "ctx", None) else "vsrpp"
        error_line(f"{error.format_message()} (`{command} --help` lists the options)")
        return error.exit_code
    return result if isinstance(result, int) else ExitStatus.OK


def _is_usage_error(error: Exception) -> bool:
    """click's own errors (a value out of range, an unknown option): typer vendors click, so they
    are known by what they carry rather than by class."""
    return hasattr(error, "format_message") and isinstance(getattr(error, "exit_code", None), int)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(ExitStatus.INTERRUPTED if signum == signal.SIGINT else ExitStatus.TERMINATED)


__all__ = ["app", "main", "run"]
