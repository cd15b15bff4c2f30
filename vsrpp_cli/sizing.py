"""How much work goes through the network at once: frames per window and windows per forward,
from the device's free memory; and the plan a run keeps (window size, segment length)."""

from __future__ import annotations

import math

import torch

SEGMENT_FRAMES = 240  # output frames per segment by default (whole windows: a segment may hold more)
SEGMENTS_PER_WORKER = 4  # a shared run's default segments are short enough that each worker gets this many


def default_chunk(device: torch.device, width: int, height: int, mid_channels: int, overlap: int) -> int:
    """Frames kept per window: 32 on CPU; on CUDA, as many as fit in 60% of the free memory with
    the window's context (chunk + 2 * overlap frames go through the network), 8 to 100."""
    if device.type != "cuda":
        return 32
    free, _ = torch.cuda.mem_get_info(device)
    return chunk_for_memory(free, width, height, mid_channels, overlap)


def chunk_for_memory(free: int, width: int, height: int, mid_channels: int, overlap: int) -> int:
    fits = int(0.6 * free - scratch_bytes(width, height, mid_channels)) // frame_bytes(width, height, mid_channels)
    return max(8, min(100, fits - 2 * overlap))


def default_batch(device: torch.device, width: int, height: int, mid_channels: int, window_frames: int) -> int:
    """Windows per forward: 1 on CPU; on CUDA, as many windows as fit in 60% of the free memory
    (1 to 8: batching independent clips pays 1.4-1.5x on small frames, docs/REFERENCE.md s.7)."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    usable = 0.6 * free - scratch_bytes(width, height, mid_channels)
    return int(max(1, min(8, usable // (frame_bytes(width, height, mid_channels) * window_frames))))


def frame_bytes(width: int, height: int, mid_channels: int) -> int:
    """Device memory per frame of a window: the features of both directions and branches (fp16),
    flows and grids, and at 4x: the fp32 output, the enlarged source it is blended with
    (--strength) and the colour conversion's fp32 planes, all held to the window's end."""
    pixels = width * height
    features = pixels * (mid_channels * 6 * 2 + 16)
    output = pixels * 16 * 3 * 4  # fp32 RGB at 4x
    return features + 3 * output  # the output, the blend's enlarged source, colour temporaries


def scratch_bytes(width: int, height: int, mid_channels: int) -> int:
    """One frame's DCN columns and reconstruction at 4x, freed after each step."""
    return width * height * mid_channels * 2 * 60


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
