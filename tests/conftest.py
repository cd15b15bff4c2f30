"""Shared test data: real video encoded and decoded with PyAV, and checkpoints on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Under pytest-xdist the workers share the machine's cores: each takes its share (torch threads,
# and the processes tests start), since oversubscribed OpenMP threads are ruinous (threads.py,
# whose threads_per_process this is: it cannot be imported here, as OpenMP reads the variable
# when torch is imported).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    share = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ["OMP_NUM_THREADS"] = str(max(1, share))

import torch  # after the thread budget is set
from media import decode_video, encode_video, moving_scene
from reference import random_official_checkpoint

# Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors (set before any kernel
# is defined). On a GPU machine they compile for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def no_network_and_own_weights_folder(tmp_path_factory, monkeypatch):
    """No test reaches the real model host or the checkout's weights/ folder: downloads go to
    a closed local port unless a test serves its own, and files to a folder of the test's."""
    monkeypatch.setenv("VSRPP_WEIGHTS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("VSRPP_HOME", str(tmp_path_factory.mktemp("vsrpp_home")))
    monkeypatch.delenv("VSRPP_MODELS", raising=False)


@pytest.fixture(scope="session")
def video_clip(tmp_path_factory):
    """Real decoded frames of an H.264 clip: call with (frames, height, width)."""
    cache = {}

    def make(frames: int, height: int, width: int) -> torch.Tensor:
        key = (frames, height, width)
        if key not in cache:
            folder = tmp_path_factory.mktemp("video")
            # libx264 with yuv420p wants even sizes: encode one pixel larger and crop.
            scene = moving_scene(frames, height + height % 2, width + width % 2)
            clip = decode_video(encode_video(folder / "clip.mp4", scene))
            assert clip.shape[1] == frames
            cache[key] = clip[..., :height, :width].contiguous()
        return cache[key]

    return make


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory):
    """Write a random-weight checkpoint in the exact official layout (legacy torch format); hr as
    random_official_checkpoint's."""
    cache = {}

    def make(mid=64, blocks=7, x4=True, seed=0, hr=None) -> tuple[Path, dict]:
        key = (mid, blocks, x4, seed, hr)
        if key not in cache:
            checkpoint = random_official_checkpoint(mid, blocks, x4, seed, hr)
            path = tmp_path_factory.mktemp("ckpt") / f"basicvsr_plusplus_c{mid}n{blocks}_test.pth"
            torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
            cache[key] = (path, checkpoint)
        return cache[key]

    return make


# ----------------------------------------------------------------------------- the failpoint matrix
@pytest.fixture(scope="session")
def fault_weights(official_checkpoint) -> Path:
    return official_checkpoint(8, 1, True, seed=5)[0]


@pytest.fixture(scope="session")
def fault_clip(tmp_path_factory) -> Path:
    """12 frames with stereo audio: 3 segments of 2 windows with faults.WINDOWS."""
    return encode_video(tmp_path_factory.mktemp("clip") / "in.mp4", moving_scene(12, 32, 48), audio_channels=2)


@pytest.fixture(scope="session")
def fault_reference(tmp_path_factory, fault_weights, fault_clip) -> Path:
    """The clip upscaled uninterrupted, in one process with one thread (as every worker runs), with
    faults.WINDOWS (the network left out)."""
    from faults import WINDOWS
    from harness import run_vsrpp

    path = tmp_path_factory.mktemp("reference") / "full.mp4"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        assert run_vsrpp("upscale", fault_clip, path, "--weights", fault_weights, *WINDOWS).returncode == 0
    return path
