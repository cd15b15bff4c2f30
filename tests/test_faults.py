"""Every failpoint of the pipeline (failpoints.py), for one process and for two workers: the run
stops with one line, and `--resume` gives the frames, times and audio of an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from harness import run_vsrpp
from media import encode_video, moving_scene, probe, read_frames

from vsrpp_cli.failpoints import POINTS, parse

WORKER_POINTS = ("decode", "network", "encode", "commit", "send")
WRITER_POINTS = ("save", "join", "rename")
WINDOWS = ["--chunk-frames", "2", "--chunk-overlap", "1", "--segment-frames", "4", "-q"]
TWO = ["--nproc-per-node", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def one_thread_each(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic in every process (test_shared.py)


@pytest.fixture(scope="module")
def weights(official_checkpoint) -> Path:
    return official_checkpoint(8, 1, True, seed=5)[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 frames with stereo audio: 3 segments of 2 windows."""
    return encode_video(tmp_path_factory.mktemp("clip") / "in.mp4", moving_scene(12, 32, 48), audio_channels=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, weights, clip) -> Path:
    path = tmp_path_factory.mktemp("reference") / "full.mp4"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        assert run_vsrpp("upscale", clip, path, "--weights", weights, *WINDOWS).returncode == 0
    return path


def resumes_exactly(output: Path, reference: Path, weights: Path, clip: Path, *launch: str) -> dict:
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


@pytest.mark.parametrize("point", POINTS)
def test_one_process_raising_at_each_point(tmp_path, monkeypatch, weights, clip, reference, point):
    """The second time the point is reached (the first for the writer's last steps)."""
    hit = 1 if point in ("join", "rename") else 2
    monkeypatch.setenv("VSRPP_FAILPOINTS", f"{point}@{hit}=raise")
    output = tmp_path / "out.mp4"
    failed = run_vsrpp("upscale", clip, output, "--weights", weights, *WINDOWS)
    assert failed.returncode == 1
    assert f"failpoint {point}" in one_line(failed.stderr)
    monkeypatch.delenv("VSRPP_FAILPOINTS")
    facts = resumes_exactly(output, reference, weights, clip)
    assert facts["windows_resumed"] >= (2 if point in ("send", "save", "join", "rename") else 1)


@pytest.mark.parametrize("point", ["decode", "send", "join", "rename"])
def test_one_process_killed_at_a_point(tmp_path, weights, clip, reference, point):
    """kill -9 (SIGKILL to itself): nothing runs to clean up."""
    hit = 1 if point in ("join", "rename") else 2
    env = {**os.environ, "VSRPP_FAILPOINTS": f"{point}@{hit}=crash"}
    output = tmp_path / "out.mp4"
    args = ["upscale", clip, output, "--weights", weights, *WINDOWS]
    killed = subprocess.run([sys.executable, "-m", "vsrpp_cli", *map(str, args)], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr
    resumes_exactly(output, reference, weights, clip)


@pytest.mark.parametrize("point", WORKER_POINTS)
def test_two_workers_one_killed_at_each_point(tmp_path, monkeypatch, weights, clip, reference, point):
    """Worker 1 killed at the point: the agent stops worker 0, the run stops with one line, and
    --resume (one process for some points, two for others) completes it."""
    monkeypatch.setenv("VSRPP_FAILPOINTS", f"{point}/1@1=crash")
    output = tmp_path / "out.mp4"
    failed = run_vsrpp("upscale", clip, output, "--weights", weights, *WINDOWS, *TWO)
    assert failed.returncode == 1
    line = one_line(failed.stderr)
    assert "worker 1" in line and "signal 9" in line and "--resume" in line
    monkeypatch.delenv("VSRPP_FAILPOINTS")
    resumes_exactly(output, reference, weights, clip, *(TWO if point in ("encode", "send") else ()))


@pytest.mark.parametrize("point", WRITER_POINTS)
def test_two_workers_the_writer_failing_at_each_point(tmp_path, monkeypatch, weights, clip, reference, point):
    monkeypatch.setenv("VSRPP_FAILPOINTS", f"{point}@{1 if point != 'save' else 2}=raise")
    output = tmp_path / "out.mp4"
    failed = run_vsrpp("upscale", clip, output, "--weights", weights, *WINDOWS, *TWO)
    assert failed.returncode == 1
    assert f"failpoint {point}" in one_line(failed.stderr)
    monkeypatch.delenv("VSRPP_FAILPOINTS")
    resumes_exactly(output, reference, weights, clip)


def test_a_killed_worker_restarted_by_the_agent_finishes_the_run(tmp_path, monkeypatch, weights, clip, reference):
    """--max-restarts: the killed worker's segment is taken again in the next round."""
    monkeypatch.setenv("VSRPP_FAILPOINTS", "commit/1@1=crash")
    output = tmp_path / "out.mp4"
    result = run_vsrpp("upscale", clip, output, "--weights", weights, *WINDOWS, *TWO, "--max-restarts", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(read_frames(output), read_frames(reference))
    assert probe(output) == probe(reference)
    assert sum(w["frames"] for w in json.loads(result.stdout)["workers"]) >= 12  # round 0's saved ones and round 1's


def test_failpoint_specs():
    assert parse("commit/1@2=crash, join=raise") == [("commit", 1, 2, "crash"), ("join", None, None, "raise")]
    for wrong in ("nowhere=crash", "commit=explode", "commit"):
        with pytest.raises(ValueError, match="VSRPP_FAILPOINTS"):
            parse(wrong)
