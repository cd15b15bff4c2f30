"""Shared test data: real video encoded and decoded with PyAV, and checkpoints on disk."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # for `reference`

from reference import random_official_checkpoint

torch.set_num_threads(max(1, torch.get_num_threads()))


def moving_scene(frames: int, height: int, width: int, motion=(2, 1), seed=0) -> np.ndarray:
    """(t, h, w, 3) uint8: a textured scene panned by `motion` (dx, dy) pixels per frame."""
    rng = np.random.default_rng(seed)
    margin = max(abs(motion[0]), abs(motion[1])) * frames + 8
    big_h, big_w = height + 2 * margin, width + 2 * margin
    coarse = rng.random((big_h // 8 + 2, big_w // 8 + 2, 3))
    texture = np.kron(coarse, np.ones((8, 8, 1)))[:big_h, :big_w]
    yy, xx = np.mgrid[:big_h, :big_w]
    texture = 0.6 * texture + 0.4 * (0.5 + 0.5 * np.sin(xx / 3.0 + yy / 5.0))[..., None]
    clip = []
    for i in range(frames):
        top, left = margin + i * motion[1], margin + i * motion[0]
        clip.append(texture[top : top + height, left : left + width])
    return (np.stack(clip) * 255).round().astype(np.uint8)


def encode_video(path: Path, frames: np.ndarray, codec="libx264", pix_fmt="yuv420p", fps=25) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_video(path: Path) -> torch.Tensor:
    """(1, t, 3, h, w) float32 in [0, 1]."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)


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
    """Write a random-weight checkpoint in the exact official layout (legacy torch format)."""
    cache = {}

    def make(mid=64, blocks=7, x4=True, seed=0) -> tuple[Path, dict]:
        key = (mid, blocks, x4, seed)
        if key not in cache:
            checkpoint = random_official_checkpoint(mid, blocks, x4, seed)
            path = tmp_path_factory.mktemp("ckpt") / f"basicvsr_plusplus_c{mid}n{blocks}_test.pth"
            torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
            cache[key] = (path, checkpoint)
        return cache[key]

    return make
