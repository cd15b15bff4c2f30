"""How much work goes through the network at once: frames per window and windows per forward,
from the device's free memory; and the plan a run keeps (window size, segment length)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..network.basicvsrpp import RECONSTRUCT_BYTES, RECONSTRUCT_ELEMENTS_PER_PIXEL

MIN_TILE = 64  # input pixels: a tile still runs the network's fixed work (flows on at least 64x64)
SEGMENT_FRAMES = 240  # output frames per segment by default (whole windows: a segment may hold more)
SEGMENTS_PER_WORKER = 4  # a shared run's default segments are short enough that each worker gets this many


def window_shape(
    device: torch.device, width: int, height: int, mid_channels: int, element_bytes: int, asked: Any
) -> tuple[int, int]:
    """Frames kept per window and the tile size: as `asked` (its chunk_frames and tile, when not
    0), else from the device's free memory: windows as long as fit, and where even the shortest
    window of whole frames does not fit, tiles from the start (rather than a first window that
    runs out of memory and is retried)."""
    overlap = asked.chunk_overlap
    chunk = asked.chunk_frames or default_chunk(device, width, height, mid_channels, overlap, element_bytes)
    tile = asked.tile
    if not tile and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        window = chunk + 2 * overlap
        tile = tile_for_memory(free, width, height, mid_channels, window, asked.tile_overlap, element_bytes)
    return chunk, tile


def tiles_notice(info, window_frames: int, tile: int) -> str:
    """What a user is told when tiles were chosen for them."""
    return (
        f"windows of {window_frames} frames of {info.width}x{info.height} do not fit in this GPU's free memory: tiles "
        f"of {tile} px from the start (--tile sets another size, --chunk-overlap shortens windows)"
    )


def tile_for_memory(
    free: int, width: int, height: int, mid_channels: int, window_frames: int, tile_overlap: int,
    element_bytes: int = 2,
) -> int:  # fmt: skip
    """0 (whole frames) when a window of whole frames fits in 60% of `free`; else the largest
    tile whose window fits, halving from the frame's longer side as the out-of-memory retry does
    (engine._smaller_tile), down to MIN_TILE."""
    budget = 0.6 * free
    if window_bytes(window_frames, width, height, mid_channels, element_bytes) <= budget:
        return 0
    tile = max(width, height)
    while tile > MIN_TILE:
        tile = max(MIN_TILE, tile // 2)
        side_w, side_h = min(width, tile + 2 * tile_overlap), min(height, tile + 2 * tile_overlap)
        if window_bytes(window_frames, side_w, side_h, mid_channels, element_bytes) <= budget:
            break
    return tile


def default_chunk(
    device: torch.device, width: int, height: int, mid_channels: int, overlap: int, element_bytes: int = 2
) -> int:
    """Frames kept per window: 32 on CPU; on CUDA, as many as fit in 60% of the free memory with
    the window's context (chunk + 2 * overlap frames go through the network), 8 to 100."""
    if device.type != "cuda":
        return 32
    free, _ = torch.cuda.mem_get_info(device)
    return chunk_for_memory(free, width, height, mid_channels, overlap, element_bytes)


def chunk_for_memory(
    free: int, width: int, height: int, mid_channels: int, overlap: int, element_bytes: int = 2
) -> int:
    fixed = window_bytes(0, width, height, mid_channels, element_bytes)
    per_frame = window_bytes(1, width, height, mid_channels, element_bytes) - fixed
    fits = int(0.6 * free - fixed) // per_frame
    return max(8, min(100, fits - 2 * overlap))


def default_batch(
    device: torch.device, width: int, height: int, mid_channels: int, window_frames: int, element_bytes: int = 2
) -> int:
    """Windows per forward: 1 on CPU; on CUDA, as many windows as fit in 60% of the free memory
    (1 to 8: batching independent clips pays 1.4-1.5x on small frames, docs/REFERENCE.md s.7)."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    fixed = window_bytes(0, width, height, mid_channels, element_bytes)
    one_window = window_bytes(window_frames, width, height, mid_channels, element_bytes) - fixed
    return int(max(1, min(8, (0.6 * free - fixed) // one_window)))


def window_bytes(
    frames: int, width: int, height: int, mid_channels: int, element_bytes: int = 2,
    reconstruction_batch: int = RECONSTRUCT_BYTES,
) -> int:  # fmt: skip
    """Device memory for `frames` frames through the network at once (one window, or a batch of
    them), the one sizing formula. Each frame holds to the end: its features in six copies of C
    channels (the spatial ones, the four branches', the propagation's), its flows (fp32), and its
    4x RGB output twice (the network's and the converted one). Once per forward: the
    reconstruction's working set, RECONSTRUCT_ELEMENTS_PER_PIXEL values a frame, over as many
    frames as `reconstruction_batch` bytes hold (basicvsrpp.reconstruct batches them on a GPU; the
    CPU runs one frame at a time: 0). Checked against the allocations of CPU runs
    (tests/test_windows.py): in bf16, 10.25 bytes a channel and 182 bytes besides per frame and
    input pixel, against this formula's 12 and 208, and 5,980 bytes per input pixel once, against
    6,144; in fp32 (on a CPU without a fast bf16), 20.3 and 305 against 24 and 400, and 12,041
    once against 12,288."""
    pixels = width * height
    per_frame = pixels * (6 * mid_channels * element_bytes + 16 + 2 * 48 * element_bytes)
    one_reconstruction = pixels * RECONSTRUCT_ELEMENTS_PER_PIXEL * element_bytes
    return frames * per_frame + max(one_reconstruction, reconstruction_batch)


def plan(
    chunk: int, segment_frames: int, frames_output: bool, total: int | None = None, workers: int = 1
) -> dict[str, int]:
    """Window size and windows per segment, stored with the run: a resumed run keeps them even
    where free GPU memory (which sizes windows) has changed since. A frames folder has no encoder
    to restart on a keyframe, so there every window is a segment of its own. Unless
    --segment-frames is given, a shared run's segments are short enough that every worker gets
    SEGMENTS_PER_WORKER of them (a worker holds a whole segment; shorter ones share the tail)."""
    if frames_output:
        return {"chunk_frames": chunk, "windows_per_segment": 1}
    if segment_frames:
        wanted = segment_frames
    elif workers > 1 and total:
        wanted = min(SEGMENT_FRAMES, math.ceil(total / (workers * SEGMENTS_PER_WORKER)))
    else:
        wanted = SEGMENT_FRAMES
    return {"chunk_frames": chunk, "windows_per_segment": max(1, math.ceil(wanted / chunk))}
