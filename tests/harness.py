"""The one way tests run the `vsrpp` command.

`run_vsrpp` runs it in this process (vsrpp_cli.cli.run: the same parsing, error handling and exit
codes as the installed command, without a Python start-up and a torch import per call).
`vsrpp_process` starts a real process, for what only a process shows: the entry point, signals,
kills and resume, distributed launch. Neither has a wall-clock timeout: a busy machine makes a
test slow, never failed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

# Where a test is about the file around the frames (times, audio, subtitles, containers, a damaged
# input, where a run stops and what --resume keeps) and not what the network makes of them, the
# network is left out: `--strength 0` gives the source enlarged as the network's skip connection
# does, every other step of the run the same.
NO_NETWORK = ["--strength", "0"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_vsrpp(*args: str) -> Result:
    from vsrpp_cli.cli import run

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run([str(arg) for arg in args])
    return Result(int(code), out.getvalue(), err.getvalue())


def options_without_network(weights: Path, **options: object):
    """pipeline.Options for a run in this process, NO_NETWORK's strength."""
    from vsrpp_cli.run.pipeline import Options

    return Options(weights, strength=0.0, **options)


def vsrpp_process(*args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vsrpp_cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        **popen,
    )
