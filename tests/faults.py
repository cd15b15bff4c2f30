"""What the failpoint tests share (test_faults.py, test_faults_shared.py): the windows, the
exact-resume check, the one-line check. Their clip, checkpoint and reference are conftest's
fault_* fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from harness import NO_NETWORK, run_vsrpp
from media import probe, read_frames

# 3 segments of 2 windows, each with a frame of context on either side; without the network
# (harness.NO_NETWORK): the matrix is about where a run stops and what --resume makes of what it
# kept (frames, times, audio, the run's folder), and the network was two thirds of its CPU time.
# What the network makes of a resumed window's context frames is held to an uninterrupted run with
# the network on by test_nothing_lost.py (one process killed, or stopped by a signal),
# test_shared.py (a worker killed mid-transfer, a hung main thread) and test_shots.py (a resumed
# run's shots).
WINDOWS = ["--chunk-frames", "2", "--chunk-overlap", "1", "--segment-frames", "4", "-q", *NO_NETWORK]


def resumes_exactly(output: Path, reference: Path, weights: Path, clip: Path, *launch: str) -> dict:
    """`--resume` completes the run: the reference's frames, times and audio, nothing else left."""
    assert not output.exists()
    resumed = run_vsrpp("upscale", clip, output, "--weights", weights, *WINDOWS, *launch, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert np.array_equal(read_frames(output), read_frames(reference))
    assert probe(output) == probe(reference)
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]
    return json.loads(resumed.stdout)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]
