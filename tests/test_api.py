"""vsrpp as a library (api.py): the same engine and output as the command, frames streamed."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from harness import run_vsrpp
from media import encode_video, moving_scene, read_frames, write_png

import vsrpp_cli
from vsrpp_cli.errors import UsageError
from vsrpp_cli.video.shots import LOOKAHEAD

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


@pytest.mark.parametrize("scene_cuts, lookahead", [("off", 0), ("auto", LOOKAHEAD)])
def test_frames_hold_one_window_and_lag_by_one_window_and_its_overlap(weights, scene, scene_cuts, lookahead):
    """... and, finding cuts as the frames come, by the frames the detector looks ahead."""
    read = []

    def source():
        for rgb in scene:
            read.append(len(read))
            yield rgb

    upscaler = vsrpp_cli.Upscaler(weights=weights, device="cpu", scene_cuts=scene_cuts, **WINDOWS)
    for index, _ in enumerate(upscaler.frames(source())):
        window_end = (index // 3 + 1) * 3
        assert len(read) <= min(8, window_end + 2 + lookahead)  # no further ahead than the window and its overlap
        assert lookahead == 0 or index > 0 or len(read) == min(8, window_end + 2 + lookahead)


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


@pytest.mark.parametrize(
    "options, says",
    [
        ({"chunk_frames": -5}, "chunk_frames=-5: Input should be greater than or equal to 0"),
        ({"tile": -1}, "tile=-1"),
        ({"batch": -3}, "batch=-3"),
        ({"nproc_per_node": 0}, "nproc_per_node=0"),
        ({"crf": "abc"}, "crf='abc'"),
        ({"precision": "fp64"}, "precision='fp64'"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"overwrite": 1}, "overwrite=1: give True or False"),
        ({"chunk_frames": True}, "chunk_frames=True"),
        ({"strength": 1.5}, "strength=1.5"),
        ({"tile": 40, "tile_overlap": 20}, "must be larger than twice --tile-overlap"),
        ({"codec": "no-such-encoder"}, "--codec no-such-encoder"),
    ],
)
def test_the_function_refuses_what_the_command_refuses(tmp_path, weights, options, says):
    """By the command's own declaration of each option, before anything is read or written."""
    source = encode_video(tmp_path / "in.mp4", moving_scene(2, 32, 48))
    with pytest.raises(vsrpp_cli.VsrppError, match=re.escape(says)):
        vsrpp_cli.upscale(source, tmp_path / "out.mp4", weights=weights, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    assert vsrpp_cli.upscale(source, tmp_path / "out.mp4", weights=weights, chunk_frames="2").frames == 2  # as typed


@pytest.mark.parametrize(
    "frames, says",
    [
        (5, "takes frames one after another"),
        ([np.zeros((32, 48, 3), np.uint8), np.zeros((32, 40, 3), np.uint8)], "frame 1 is 40x32, the first was 48x32"),
        ([torch.zeros(3, 0, 8)], "h and w at least 1"),
        ([torch.full((3, 32, 48), 1.5)], "holds values in [0, 1]; got 1.5 to 1.5"),
        ([torch.full((3, 32, 48), float("nan"))], "holds values in [0, 1]"),
        (["a frame"], "got str"),
    ],
)
def test_frames_refuse_what_is_not_a_run_of_frames(weights, frames, says):
    upscaler = vsrpp_cli.Upscaler(weights=weights, device="cpu", **WINDOWS)
    with pytest.raises(UsageError, match=re.escape(says)):
        list(upscaler.frames(frames))
    with pytest.raises(UsageError, match="each at least 1"):
        upscaler.tensor(torch.zeros(0, 3, 8, 8, dtype=torch.uint8))


def test_an_upscaler_refuses_what_the_command_refuses(weights):
    with pytest.raises(UsageError, match="chunk_overlap=-1"):
        vsrpp_cli.Upscaler(weights=weights, device="cpu", chunk_overlap=-1)
    with pytest.raises(UsageError, match="chunk_frames=0: an Upscaler keeps at least 1 frame"):
        vsrpp_cli.Upscaler(weights=weights, device="cpu", chunk_frames=0)


def test_read_only_frames_are_taken_without_a_warning(weights, scene):
    frozen = [rgb.copy() for rgb in scene[:3]]
    for rgb in frozen:
        rgb.flags.writeable = False
    upscaler = vsrpp_cli.Upscaler(weights=weights, device="cpu", **WINDOWS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(upscaler.frames(frozen))) == 3


def test_a_script_without_the_main_guard_is_told_what_to_add(tmp_path, weights):
    """Shared workers import the script that started them again; unguarded, each would start a
    run of its own. They end quietly and the script's call says what to add, in one line."""
    source = encode_video(tmp_path / "in.mp4", moving_scene(4, 32, 48))
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import vsrpp_cli\n"
        f"vsrpp_cli.upscale({str(source)!r}, {str(tmp_path / 'out.mp4')!r}, weights={str(weights)!r}, "
        "device='cpu', nproc_per_node=2)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert 'under `if __name__ == "__main__":`' in last, result.stderr
    assert result.stderr.count("Traceback") == 1  # the script's own, not one per worker
