"""vsrpp as a library (api.py): the same engine and output as the command, frames streamed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from harness import run_vsrpp
from media import encode_video, moving_scene, read_frames, write_png

import vsrpp_cli
from vsrpp_cli.errors import UsageError

WINDOWS = {"chunk_frames": 3, "chunk_overlap": 2}


@pytest.fixture(scope="module")
def weights(official_checkpoint):
    return official_checkpoint(8, 1, True, seed=6)[0]


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return moving_scene(8, 32, 48)


def test_frames_give_the_commands_frames(tmp_path, weights, scene):
    """A folder of PNG frames through the command and the same arrays through Upscaler.frames:
    the same output, bit for bit."""
    folder = tmp_path / "in"
    folder.mkdir()
    for index, rgb in enumerate(scene):
        write_png(folder / f"{index:03d}.png", rgb)
    args = ["--weights", weights, "--chunk-frames", "3", "--chunk-overlap", "2", "-q"]
    assert run_vsrpp("upscale", folder, tmp_path / "out", *args).returncode == 0
    upscaler = vsrpp_cli.Upscaler(weights=weights, device="cpu", **WINDOWS)
    ours = np.stack(list(upscaler.frames(iter(scene))))
    assert ours.shape == (8, 128, 192, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, read_frames(tmp_path / "out"))


def test_frames_hold_one_window_and_lag_by_one_window_and_its_overlap(weights, scene):
    read = []

    def source():
        for rgb in scene:
            read.append(len(read))
            yield rgb

    upscaler = vsrpp_cli.Upscaler(weights=weights, device="cpu", **WINDOWS)
    for index, _ in enumerate(upscaler.frames(source())):
        window_end = (index // 3 + 1) * 3
        assert len(read) <= min(8, window_end + 2)  # no further ahead than the window and its overlap


def test_tensors_in_tensors_out(weights, scene):
    upscaler = vsrpp_cli.Upscaler(weights=weights, device="cpu", **WINDOWS)
    clip = torch.from_numpy(scene).permute(0, 3, 1, 2)  # (t, 3, h, w) uint8
    as_arrays = np.stack(list(upscaler.frames(iter(scene))))
    out = upscaler.tensor(clip)
    assert out.dtype == torch.uint8 and out.shape == (8, 3, 128, 192)
    assert np.array_equal(out.permute(0, 2, 3, 1).numpy(), as_arrays)
    floats = upscaler.tensor(clip.float() / 255)
    assert floats.dtype == torch.float32 and (floats * 255 - out.float()).abs().max() <= 1.0
    with pytest.raises(UsageError, match=r"\(t, 3, h, w\)"):
        upscaler.tensor(clip[0])


def test_the_function_is_the_command(tmp_path, weights):
    source = encode_video(tmp_path / "in.mp4", moving_scene(5, 32, 48), audio_channels=2)
    summary = vsrpp_cli.upscale(source, tmp_path / "api.mp4", weights=weights, chunk_frames=2, chunk_overlap=1)
    assert isinstance(summary, vsrpp_cli.Summary) and summary.frames == 5
    args = ["--weights", weights, "--chunk-frames", "2", "--chunk-overlap", "1", "-q"]
    assert run_vsrpp("upscale", source, tmp_path / "cli.mp4", *args).returncode == 0
    assert (tmp_path / "api.mp4").read_bytes() == (tmp_path / "cli.mp4").read_bytes()
    with pytest.raises(vsrpp_cli.VsrppError, match="already exists; add --overwrite"):
        vsrpp_cli.upscale(source, tmp_path / "api.mp4", weights=weights)
    with pytest.raises(UsageError, match="takes no option 'chunk_size'"):
        vsrpp_cli.upscale(source, tmp_path / "x.mp4", weights=weights, chunk_size=4)
