"""Every failpoint of the pipeline (failpoints.py) for one process (test_faults_shared.py: for
two workers): the run stops with one line, and `--resume` gives the frames, times and audio of an
uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from faults import WINDOWS, one_line, resumes_exactly
from harness import run_vsrpp, vsrpp_process

from vsrpp_cli.run.failpoints import POINTS, parse


@pytest.fixture(autouse=True)
def one_thread_each(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic in every process (test_shared.py)


# cuts: a shared run's only; stream: a machine's without the run's folder (test_shared.py)
@pytest.mark.parametrize("point", [point for point in POINTS if point not in ("cuts", "stream")])
def test_one_process_raising_at_each_point(tmp_path, monkeypatch, fault_weights, fault_clip, fault_reference, point):
    """The second time the point is reached (the first for the writer's last steps)."""
    hit = 1 if point in ("join", "rename") else 2
    monkeypatch.setenv("VSRPP_FAILPOINTS", f"{point}@{hit}=raise")
    output = tmp_path / "out.mp4"
    failed = run_vsrpp("upscale", fault_clip, output, "--weights", fault_weights, *WINDOWS)
    assert failed.returncode == 1
    assert f"failpoint {point}" in one_line(failed.stderr)
    monkeypatch.delenv("VSRPP_FAILPOINTS")
    facts = resumes_exactly(output, fault_reference, fault_weights, fault_clip)
    assert facts["windows_resumed"] >= (2 if point in ("send", "save", "join", "rename") else 1)


def test_a_spool_write_that_never_ends_stops_the_run_and_resume_finishes_it(
    tmp_path, fault_weights, fault_clip, fault_reference
):
    """The spool's second window write blocks for ever (a disk or network file system that stopped
    answering): a one-process run has no other watch over its disk, so the spool's own deadline
    stops it with one line (were a legitimate write slower than the deadline, the run would stop
    sooner, as it should: the same line); --resume then gives the uninterrupted output. A process
    of its own: the stuck thread ends with it, as it would for a user."""
    env = {**os.environ, "VSRPP_FAILPOINTS": "spool@2=hang", "VSRPP_SPOOL_SECONDS": "2"}
    output = tmp_path / "out.mp4"
    failed = vsrpp_process("upscale", fault_clip, output, "--weights", fault_weights, *WINDOWS, env=env)
    assert failed.returncode == 1
    line = one_line(failed.stderr)
    assert "has not finished in 2 s" in line and "--resume" in line, line
    resumes_exactly(output, fault_reference, fault_weights, fault_clip)


@pytest.mark.parametrize("point", ["rename"])
def test_one_process_killed_at_a_point(tmp_path, fault_weights, fault_clip, fault_reference, point):
    """kill -9 (SIGKILL to itself) while the joined output is moved into place: nothing runs to
    clean up (test_nothing_lost.py kills single runs part-way through too)."""
    hit = 1 if point in ("join", "rename") else 2
    env = {**os.environ, "VSRPP_FAILPOINTS": f"{point}@{hit}=crash"}
    output = tmp_path / "out.mp4"
    args = ["upscale", fault_clip, output, "--weights", fault_weights, *WINDOWS]
    killed = subprocess.run([sys.executable, "-m", "vsrpp_cli", *map(str, args)], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr
    resumes_exactly(output, fault_reference, fault_weights, fault_clip)


def test_failpoint_specs():
    assert parse("encode/1@2=crash, join=raise") == [("encode", 1, 2, "crash"), ("join", None, None, "raise")]
    for wrong in ("nowhere=crash", "encode=explode", "encode"):
        with pytest.raises(ValueError, match="VSRPP_FAILPOINTS"):
            parse(wrong)
