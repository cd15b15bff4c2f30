"""One video shared among worker processes (`upscale --nproc-per-node N`): the frames, times and
audio of a single-process run; a killed worker, and a resume with another number of workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import run_vsrpp
from media import encode_video, moving_scene, probe, read_frames

VFR_PTS = [0, 512, 1024, 2048, 2560, 3584, 4096, 4608, 6144, 6656, 7168, 8192, 9216, 9728, 10240, 11264]
# 8 windows in 4 segments: after the first segment closes, workers may claim at most one segment
# and one window each ahead of the writer, so the last windows wait and every worker is alive.
WINDOWS = ["--chunk-frames", "2", "--chunk-overlap", "1", "--segment-frames", "4", "-q"]


@pytest.fixture(autouse=True)
def one_thread_each(monkeypatch):
    """Bit-identical means the same arithmetic: torch's CPU convolutions sum in an order that
    depends on the thread count, so the single run and each worker use one thread."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def weights(official_checkpoint) -> Path:
    return official_checkpoint(8, 1, True, seed=4)[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """16 frames at irregular times in a 1/12800 time base, with stereo AAC."""
    path = tmp_path_factory.mktemp("clip") / "vfr.mp4"
    return encode_video(path, moving_scene(16, 48, 64), pts=VFR_PTS, time_base=Fraction(1, 12800), audio_channels=2)


@pytest.fixture(scope="module")
def single(tmp_path_factory, weights, clip) -> Path:
    path = tmp_path_factory.mktemp("single") / "one.mp4"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        assert run_vsrpp("upscale", clip, path, "--weights", weights, *WINDOWS).returncode == 0
    return path


def test_two_workers_give_the_frames_of_one(tmp_path, weights, clip, single):
    output = tmp_path / "two.mp4"
    args = ["upscale", clip, output, "--weights", weights, *WINDOWS, "--nproc-per-node", "2", "--device", "cpu"]
    result = run_vsrpp(*args, "--json")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(read_frames(output), read_frames(single))
    assert probe(output) == probe(single)  # every timestamp and audio sample
    workers = json.loads(result.stdout)["workers"]
    assert [w["rank"] for w in workers] == [0, 1] and sum(w["frames"] for w in workers) == 16
    assert all(w["windows"] >= 1 and w["fps"] > 0 for w in workers)  # both took part
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.mp4"]


def test_a_killed_worker_stops_the_run_and_another_count_resumes(tmp_path, weights, clip, single):
    output, partial = tmp_path / "out.mp4", tmp_path / ".out.mp4.vsrpp-partial"
    args = ["upscale", clip, output, "--weights", weights, *WINDOWS, "--nproc-per-node", "2", "--device", "cpu"]
    process = subprocess.Popen(
        [sys.executable, "-m", "vsrpp_cli", *map(str, args)], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    while not (partial / "segment_000000.json").exists():
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    os.kill(int((partial / "worker_1.pid").read_text()), signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == 1, stderr
    assert "worker 1" in stderr and "killed by signal 9" in stderr and "--resume" in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not list(partial.glob("*.claim")) and not list(partial.glob("*.partial*"))
    assert not output.exists()

    resumed = run_vsrpp(*args[:-4], "--resume", "--json")  # one process now
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["windows_resumed"] >= 2
    assert np.array_equal(read_frames(output), read_frames(single))
    assert probe(output) == probe(single)


def test_gpus_asked_for_but_absent(tmp_path, weights, clip):
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs")
    result = run_vsrpp("upscale", clip, tmp_path / "o.mp4", "--weights", weights, "--gpus", "2", "--device", "cuda")
    assert result.returncode == 2
    assert "CUDA device" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_silent_worker_on_another_machine_stops_the_writer(tmp_path):
    """Workers on other machines cannot be watched as processes: the writer goes by their signs of
    life in the shared folder (worker_<rank>.alive, rewritten every few seconds)."""
    from vsrpp_cli.parallel import SILENT, check_remote

    from vsrpp_cli.errors import WorkerError

    (tmp_path / "window_000004.claim").write_text("3")  # rank 3: the second machine's (2 per machine)
    alive = tmp_path / "worker_3.alive"
    alive.write_text("")
    check_remote(tmp_path, 4, local=2)  # heard from just now: keep waiting
    past = time.time() - SILENT - 1
    os.utime(alive, (past, past))
    with pytest.raises(WorkerError, match=r"worker 3 .*has not been heard from.*--resume"):
        check_remote(tmp_path, 4, local=2)
    check_remote(tmp_path, 5, local=2)  # a window nobody has claimed yet: nothing to say


def test_two_machines_sharing_a_folder(tmp_path, weights, clip, single):
    """Two launches with --nnodes 2 (here on one machine, as two machines on a shared file system
    would run them): machine 1 only works, machine 0 also writes; the frames of one process."""
    output = tmp_path / "out.mp4"
    args = ["upscale", clip, output, "--weights", weights, *WINDOWS, "--nproc-per-node", "1", "--device", "cpu"]
    args += ["--nnodes", "2"]
    second = subprocess.Popen(
        [sys.executable, "-m", "vsrpp_cli", *map(str, args), "--node-rank", "1"], stderr=subprocess.PIPE, text=True
    )
    first = run_vsrpp(*args, "--node-rank", "0", "--json")
    _, stderr = second.communicate()
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, stderr
    assert np.array_equal(read_frames(output), read_frames(single))
    assert probe(output) == probe(single)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_a_machine_that_comes_after_the_run_finished_stops_at_once(tmp_path, weights, clip):
    """No run folder beside a finished output: a late machine has nothing to wait for (it used to
    wait for the run's folder forever)."""
    output = tmp_path / "out.mp4"
    output.write_bytes(b"a finished video")
    args = ["upscale", clip, output, "--weights", weights, *WINDOWS, "--nnodes", "2", "--node-rank", "1"]
    late = run_vsrpp(*args, "--device", "cpu", "--json")
    assert late.returncode == 0, late.stderr
    facts = json.loads(late.stdout)
    assert facts["frames"] == 0 and any("out.mp4 is finished and no run is open" in n for n in facts["notices"])
    assert output.read_bytes() == b"a finished video" and list(tmp_path.iterdir()) == [output]
