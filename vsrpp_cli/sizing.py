"""How much work goes through the network at once: frames per window and windows per forward,
from the device's free memory; and the plan a run keeps (window size, segment length)."""

from __future__ import annotations

import math

import torch

SEGMENT_FRAMES = 240  # output frames per segment by default (whole windows: a segment may hold more)
SEGMENTS_PER_WORKER = 4  # a shared run's default segments are short enough that each worker gets this many


def default_chunk(device: torch.device, width: int, height: int, mid_channels: int) -> int:
    """Frames per window: 32 on CPU; on CUDA, what fits in 60% of the free memory (8 to 100)."""
    if device.type != "cuda":
        return 32
    usable, per_frame = window_memory(device, width, height, mid_channels)
    return int(max(8, min(100, usable // per_frame)))


def default_batch(device: torch.device, width: int, height: int, mid_channels: int, window_frames: int) -> int:
    """Windows per forward: 1 on CPU; on CUDA, as many windows as fit in 60% of the free memory
    (1 to 8: batching independent clips pays 1.4-1.5x on small frames, docs/REFERENCE.md s.7)."""
    if device.type != "cuda":
        return 1
    usable, per_frame = window_memory(device, width, height, mid_channels)
    return int(max(1, min(8, usable // (per_frame * window_frames))))


def window_memory(device: torch.device, width: int, height: int, mid_channels: int) -> tuple[float, int]:
    """Bytes the windows may use (60% of the free GPU memory, less one frame's scratch) and bytes
    per frame of a window."""
    free, _ = torch.cuda.mem_get_info(device)
    pixels = width * height
    per_frame = pixels * (mid_channels * 6 * 2 + 16) + pixels * 16 * 3 * 4  # features, flows, fp32 output
    scratch = pixels * mid_channels * 2 * 60  # one frame's DCN columns and reconstruction at 4x
    return 0.6 * free - scratch, per_frame


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
