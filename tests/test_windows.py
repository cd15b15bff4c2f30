"""Temporal windows and spatial tiles, on their own."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsrpp_cli.windows import run_tiled, temporal_windows, tile_spans


@pytest.mark.parametrize("length, chunk, overlap", [(10, 3, 2), (10, 4, 0), (7, 10, 3), (1, 1, 1), (12, 4, 12)])
def test_windows_cover_every_frame_once_with_context(length, chunk, overlap):
    windows = list(temporal_windows(range(length), chunk, overlap))
    kept = [i for w in windows for i in w.kept_range]
    assert kept == list(range(length))
    for w in windows:
        assert w.items == list(range(w.start, w.start + len(w.items)))
        assert [w.items[i] for i in range(w.keep.start, w.keep.stop)] == list(w.kept_range)
        first, last = w.kept_range[0], w.kept_range[-1]
        assert w.start == max(0, first - overlap)
        assert w.start + len(w.items) == min(length, last + 1 + overlap)


def test_windows_read_lazily():
    read = []

    def frames():
        for i in range(100):
            read.append(i)
            yield i

    windows = temporal_windows(frames(), chunk=5, overlap=2)
    next(windows)
    assert len(read) == 7  # the first window's 5 frames and 2 of context after
    next(windows)
    assert len(read) == 12


def test_tile_spans_are_even_and_cover():
    assert tile_spans(100, 40) == [(0, 33), (33, 67), (67, 100)]
    assert tile_spans(30, 40) == [(0, 30)]


@pytest.mark.parametrize("tile, overlap", [(16, 4), (20, 0), (25, 8)])
def test_tiles_blend_to_the_whole_for_a_pointwise_network(tile, overlap):
    """With a network that looks at each pixel alone, tiling must give back exactly the whole."""
    clip = torch.rand(1, 2, 3, 45, 61)

    def network(x):  # x4 nearest upscaling, per pixel
        n, t, c, h, w = x.shape
        return F.interpolate(x.view(n * t, c, h, w), scale_factor=4, mode="nearest").view(n, t, c, 4 * h, 4 * w)

    tiled = run_tiled(network, clip, tile, overlap, scale=4)
    assert torch.allclose(tiled, network(clip), atol=1e-6)


# ----------------------------------------------------------------------------- batches
def test_batched_windows_and_tiles_equal_one_at_a_time(official_checkpoint, video_clip):
    """--batch N: windows and equal-size tiles stacked on the batch dimension give exactly what
    running them one by one gives, and no forward holds more than N clips."""
    from vsrpp_cli import load_model

    model = load_model(official_checkpoint(16, 2, True)[0])
    clip = video_clip(2, 64, 72)
    windows = torch.cat([clip, clip.flip(-1)])  # two different windows of the same video size
    sizes = []

    def run(part):
        sizes.append(part.shape[0])
        return model(part)

    with torch.no_grad():
        whole = torch.cat([model(w[None]) for w in windows])
        tiled = torch.cat([run_tiled(model, w[None], 40, 8, 4) for w in windows])  # 2 x 2 tiles
        assert torch.equal(run_tiled(run, windows, 0, 8, 4, batch=1), whole)
        assert sizes == [1, 1]
        sizes.clear()
        assert torch.equal(run_tiled(run, windows, 40, 8, 4, batch=4), tiled)
        assert sizes == [4, 4]  # two tiles of each of the two windows per forward


@pytest.mark.parametrize("width, height", [(854, 480), (1920, 1080), (3840, 2160)])
@pytest.mark.parametrize("free_gib", [24, 80])
def test_the_first_window_fits_with_its_context(width, height, free_gib):
    """Windows were sized for `chunk` frames while chunk + 2 * overlap go through the network
    (1080p on an 80 GB GPU overflowed at the first window); now the whole window fits the budget,
    down to the floor of 8 kept frames."""
    from vsrpp_cli.sizing import chunk_for_memory, frame_bytes, scratch_bytes

    free, overlap, mid = free_gib << 30, 8, 64
    chunk = chunk_for_memory(free, width, height, mid, overlap)
    used = (chunk + 2 * overlap) * frame_bytes(width, height, mid) + scratch_bytes(width, height, mid)
    assert chunk == 8 or used <= 0.6 * free
    without_context = chunk_for_memory(free, width, height, mid, 0)
    assert chunk == 8 or without_context - chunk == 2 * overlap  # the context is paid for


def test_a_window_that_overflows_is_recomputed_alone(tmp_path):
    """Zero biases make the network scale with its input: a bright window overflows bf16 where a
    dark one does not. Batched together, only the bright one is recomputed in fp32; the dark one
    keeps exactly what it gives alone (the whole batch used to be recomputed)."""
    from reference import random_official_checkpoint

    from vsrpp_cli.checkpoint import load_model
    from vsrpp_cli.engine import Engine

    checkpoint = random_official_checkpoint(8, 1, True, seed=5)
    state = checkpoint["state_dict"]
    for key in state:
        if key.endswith("bias") and "spynet" not in key:
            state[key].zero_()
    state["generator.conv_last.weight"] *= 1e36
    state["generator.conv_hr.weight"] *= 1e4
    torch.save(checkpoint, tmp_path / "scaled.pth")
    engine = Engine(load_model(tmp_path / "scaled.pth"), torch.device("cpu"), torch.bfloat16, batch=2)
    dark, bright = [np.full((16, 16, 3), 10, np.uint8)], [np.full((16, 16, 3), 255, np.uint8)]
    alone = engine.infer_many([dark])[0]
    assert engine.fp32_fallbacks == 0 and torch.isfinite(alone).all()
    together = engine.infer_many([dark, bright])
    assert engine.fp32_fallbacks == 1
    assert together[0].dtype == torch.bfloat16 and torch.equal(together[0], alone)
    assert together[1].dtype == torch.float32  # the bright one, recomputed in fp32


def test_deterministic_mode_sets_what_torch_needs_for_it():
    from vsrpp_cli.engine import make_deterministic

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        make_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        make_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        make_deterministic(False)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
