"""Temporal windows and spatial tiles, on their own."""

from __future__ import annotations

import os
import threading
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsrpp_cli.run.engine import slow_on_this_cpu
from vsrpp_cli.run.windows import run_tiled, temporal_windows, tile_spans


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


def peak_allocated(run) -> int:
    """The most bytes torch held at once on the CPU while `run()` ran, from the profiler's
    record of every allocation and free."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profile:
        run()
    record = profile.profiler.kineto_results.events()
    events = sorted((e.start_ns(), e.nbytes()) for e in record if e.name() == "[memory]")
    held = peak = 0
    for _, change in events:
        held += change
        peak = max(peak, held)
    return peak


MEASURED_DTYPE = torch.float32 if slow_on_this_cpu(torch.bfloat16) else torch.bfloat16


@pytest.fixture(scope="module")
def measured_window_memory(official_checkpoint) -> dict:
    """What a window costs on the CPU, per input pixel, from its real allocations: per frame at
    C16 and C32 (so per channel and besides), and once per window; at two frame sizes, so that
    the per-pixel figures are known to hold across sizes. In bf16 (fp16's size, as a GPU runs)
    where this CPU convolves it natively; elsewhere in fp32, whose 4-byte figures check the same
    formula (bf16 there is PyTorch's reference convolution: 867 s for this fixture on a 2-core
    EPYC, 15 s in fp32)."""
    from vsrpp_cli.run.engine import Engine
    from vsrpp_cli.run.threads import network_thread
    from vsrpp_cli.weights.checkpoint import load_model

    def window(mid: int, frames: int, height: int, width: int) -> int:
        model = load_model(official_checkpoint(mid, 1, True, seed=4, hr=64)[0])  # as the official
        engine = Engine(model, torch.device("cpu"), MEASURED_DTYPE)
        clip = [np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8) for i in range(frames)]
        # The profiler records the thread it runs in, and the network runs in a thread of its own.
        measure = partial(peak_allocated, lambda: engine.upscale(clip, slice(0, frames), 8))
        return network_thread().run(measure, threading.Event())

    facts = {}
    for mid, (height, width) in ((16, (64, 64)), (32, (64, 64)), (16, (64, 96))):
        few, more = window(mid, 2, height, width), window(mid, 4, height, width)
        per_frame = (more - few) / 2 / (height * width)
        facts[mid, height, width] = (per_frame, few / (height * width) - 2 * per_frame)
    return facts


@pytest.mark.parametrize("width, height", [(854, 480), (1920, 1080), (3840, 2160)])
def test_the_sizing_formula_covers_the_measured_allocations(measured_window_memory, width, height):
    """sizing.window_bytes against the CPU run's allocations, extrapolated to the official C64 at
    480p, 1080p and 4K for a default window (8 + 2 x 8 frames): never under what was measured,
    and not more than 30% over (a formula that wasted the GPU's memory would size windows small)."""
    from vsrpp_cli.run.sizing import window_bytes

    (frame_16, once_16), (frame_32, once_32), (frame_16_larger, once_16_larger) = measured_window_memory.values()
    assert frame_16_larger == pytest.approx(frame_16, rel=0.02) and once_16_larger == pytest.approx(once_16, rel=0.02)
    assert once_32 == pytest.approx(once_16, rel=0.02)  # the reconstruction's set: not the features' width
    per_channel = (frame_32 - frame_16) / 16
    per_frame_64 = frame_16 + 48 * per_channel
    frames, pixels = 8 + 2 * 8, width * height
    measured = pixels * (frames * per_frame_64 + once_16)
    element_bytes = MEASURED_DTYPE.itemsize
    formula = window_bytes(frames, width, height, 64, element_bytes, reconstruction_batch=0)  # as the CPU runs
    assert measured <= formula <= 1.3 * measured


@pytest.mark.parametrize("width, height", [(854, 480), (1920, 1080), (3840, 2160)])
@pytest.mark.parametrize("free_gib", [24, 80])
def test_the_first_window_fits_with_its_context(width, height, free_gib):
    """Windows were sized for `chunk` frames while chunk + 2 * overlap go through the network
    (1080p on an 80 GB GPU overflowed at the first window); now the whole window fits the budget,
    down to the floor of 8 kept frames."""
    from vsrpp_cli.run.sizing import chunk_for_memory, window_bytes

    free, overlap, mid = free_gib << 30, 8, 64
    chunk = chunk_for_memory(free, width, height, mid, overlap)
    assert chunk == 8 or window_bytes(chunk + 2 * overlap, width, height, mid) <= 0.6 * free
    assert chunk in (8, 100) or window_bytes(chunk + 2 * overlap + 1, width, height, mid) > 0.6 * free  # the most
    without_context = chunk_for_memory(free, width, height, mid, 0)
    assert chunk in (8, 100) or without_context - chunk == 2 * overlap  # the context is paid for


@pytest.mark.parametrize("width, height", [(854, 480), (1920, 1080), (3840, 2160)])
@pytest.mark.parametrize("free_gib", [24, 80])
def test_tiles_from_the_start_where_no_window_of_whole_frames_fits(width, height, free_gib):
    """Where even the shortest window (8 + 2 x 8 frames) of whole frames overflows the budget,
    the run starts with the largest tile whose window fits (the sizes the out-of-memory retry
    would halve to), instead of failing its first window: 480p whole, 1080p and 4K in tiles."""
    from vsrpp_cli.run.sizing import MIN_TILE, chunk_for_memory, tile_for_memory, window_bytes

    free, overlap, tile_overlap, mid = free_gib << 30, 8, 16, 64
    frames = chunk_for_memory(free, width, height, mid, overlap) + 2 * overlap
    tile = tile_for_memory(free, width, height, mid, frames, tile_overlap)

    def fits(size: int) -> bool:
        sides = [min(side, size + 2 * tile_overlap) if size else side for side in (width, height)]
        return window_bytes(frames, *sides, mid) <= 0.6 * free

    assert (tile == 0) == fits(0) == (height == 480)
    if tile:
        halvings = [max(width, height) >> k for k in range(1, 8)]
        assert tile in halvings and tile >= MIN_TILE and fits(tile) and not fits(2 * tile)


def test_a_window_that_overflows_is_recomputed_alone(tmp_path):
    """Zero biases make the network scale with its input: a bright window overflows bf16 where a
    dark one does not. Batched together, only the bright one is recomputed in fp32; the dark one
    keeps exactly what it gives alone (the whole batch used to be recomputed)."""
    from reference import random_official_checkpoint

    from vsrpp_cli.run.engine import Engine
    from vsrpp_cli.weights.checkpoint import load_model

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
    from vsrpp_cli.run.engine import make_deterministic

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
