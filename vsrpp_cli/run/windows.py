"""Temporal windows with overlapping context, and spatial tiles blended without seams.

A window keeps `chunk` frames and reads up to `overlap` more on each side, which go through the
network for their propagation and are then thrown away: memory holds chunk + 2 * overlap frames
whatever the video's length, and with overlap >= the video's length every window sees the whole
video, so the output equals one whole-sequence pass.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Generic, TypeVar

import torch
from torch import Tensor

from ..video.info import Frame
from ..video.shots import cuts_as_read

T = TypeVar("T")


@dataclass
class Window(Generic[T]):
    index: int
    start: int  # video index of items[0]
    items: list[T]  # context before, kept frames, context after
    keep: slice  # the kept frames, as positions in items

    @property
    def kept_range(self) -> range:
        return range(self.start + self.keep.start, self.start + self.keep.stop)


def temporal_windows(
    items: Iterable[T], chunk: int, overlap: int, starts_shot: Callable[[int], bool] = lambda index: False
) -> Iterator[Window[T]]:
    """Windows over a stream, read lazily: at most chunk + 2 * overlap items are held.

    Shots: where `starts_shot(i)` (asked of items already read), a shot begins at item i, and no
    window reaches across it: each shot is windowed as if it were a video of its own (its first
    window keeps its first chunk frames; context stops at its ends)."""
    if chunk < 1 or overlap < 0:
        raise ValueError("chunk must be at least 1 and overlap at least 0")
    source = iter(items)
    buffer: deque[T] = deque()
    buffer_start = 0  # video index of buffer[0]
    read = 0  # items read so far
    exhausted = False
    keep_start = shot_start = 0
    index = 0
    while True:
        while not exhausted and read < keep_start + chunk + overlap:
            try:
                buffer.append(next(source))
                read += 1
            except StopIteration:
                exhausted = True
        if keep_start >= read:
            return
        if starts_shot(keep_start):
            shot_start = keep_start
        # The shot's end as far as it is read: windows end there, so each cut is some keep_start.
        shot_end = next((i for i in range(keep_start + 1, read) if starts_shot(i)), read)
        keep_stop = min(keep_start + chunk, shot_end)
        start = max(shot_start, keep_start - overlap)
        stop = min(shot_end, keep_stop + overlap)
        while buffer_start < start:
            buffer.popleft()
            buffer_start += 1
        window_items = [buffer[i - buffer_start] for i in range(start, stop)]
        yield Window(index, start, window_items, slice(keep_start - start, keep_stop - start))
        keep_start = keep_stop
        index += 1


def windows_as_read(
    frames: Iterable[Frame], chunk: int, overlap: int, cuts: str | list[int], frame_rate: Fraction | None
) -> tuple[Iterator[Window[Frame]], set[int]]:
    """The windows over frames read front to back (one process, a pipe), shot by shot, and the set
    of cuts as far as the windows have reached: found in the frames as they are read ("auto",
    shots.LOOKAHEAD frames ahead of the windows), from a file or list, or none ("off")."""
    marked, found = cuts_as_read(frames, lambda frame: frame.image, cuts, frame_rate)
    return temporal_windows(marked, chunk, overlap, found.__contains__), found


def batches(windows: Iterable[Window[T]], size: int, alone: Callable[[Window[T]], bool] = lambda w: False
            ) -> Iterator[list[Window[T]]]:  # fmt: skip
    """Runs of up to `size` windows of one length (the network batches equal shapes only), in
    order; a window for which `alone` holds (one a resumed run has stored) comes as a run of its own."""
    pending: list[Window[T]] = []
    for window in windows:
        apart = alone(window)
        if pending and (apart or len(pending[0].items) != len(window.items)):
            yield pending
            pending = []
        if apart:
            yield [window]
            continue
        pending.append(window)
        if len(pending) >= size:
            yield pending
            pending = []
    if pending:
        yield pending


@dataclass(frozen=True)
class Span:
    """A window's frames by video index: it reads [start, stop) and keeps [keep_start, keep_stop)."""

    start: int
    keep_start: int
    keep_stop: int
    stop: int


class WindowTable:
    """Every window of a video: the layout temporal_windows makes, known before any frame is
    read, for runs that hand windows out by index (segments, resume, preview). `total` may be
    unknown (None): windows after the last cut then run on until the frames do."""

    def __init__(self, chunk: int, overlap: int, cuts: Iterable[int] = (), total: int | None = None) -> None:
        self.chunk, self.overlap, self.total = chunk, overlap, total
        self.cuts = sorted(set(cuts) - {0})
        self.last_cut = self.cuts[-1] if self.cuts else 0
        cut_set = set(self.cuts)
        # Up to the last cut, the windows as temporal_windows lays them out (its rule, not a copy);
        # after it, one shot of regular windows.
        self.head = [
            Span(w.start, w.start + w.keep.start, w.start + w.keep.stop, w.start + len(w.items))
            for w in temporal_windows(range(self.last_cut), chunk, overlap, cut_set.__contains__)
        ]

    def __len__(self) -> int:
        """The number of windows (total known)."""
        if self.total is None:
            raise ValueError("the number of windows is known only with the number of frames")
        return len(self.head) + -(-max(0, self.total - self.last_cut) // self.chunk)

    def segment_count(self, windows_per_segment: int) -> int:
        """Segments of `windows_per_segment` windows each (the last may hold fewer); total known."""
        return -(-len(self) // windows_per_segment)

    def span(self, index: int) -> Span | None:
        """Window `index`, or None past the video's end (where that is known)."""
        if index < len(self.head):
            return self.head[index]
        keep_start = self.last_cut + (index - len(self.head)) * self.chunk
        end = self.total if self.total is not None else keep_start + self.chunk + self.overlap
        if keep_start >= end:
            return None
        keep_stop = min(keep_start + self.chunk, end)
        return Span(max(self.last_cut, keep_start - self.overlap), keep_start, keep_stop,
                    min(end, keep_stop + self.overlap))  # fmt: skip

    def settled(self, index: int, decided: int) -> bool:
        """Whether window `index` is laid out for good where this table holds every cut before
        frame `decided` (those after it still unknown): it keeps and reads frames before `decided`
        only, so no later cut can end it sooner or move it."""
        span = self.span(index)
        return span is not None and span.keep_stop + self.overlap <= decided

    def window_of(self, frame: int) -> int:
        """The index of the window that keeps `frame`."""
        if frame < self.last_cut:
            return next(i for i, span in enumerate(self.head) if span.keep_start <= frame < span.keep_stop)
        return len(self.head) + (frame - self.last_cut) // self.chunk

    def frames_of(self, windows: range) -> range:
        """The frames these consecutive windows keep (empty past the end)."""
        spans = [s for s in map(self.span, windows) if s is not None]
        return range(spans[0].keep_start, spans[-1].keep_stop) if spans else range(0)


def tile_spans(size: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, size) into the fewest cores of at most `tile`, as even as possible."""
    count = max(1, math.ceil(size / tile))
    bounds = [round(k * size / count) for k in range(count + 1)]
    return list(itertools.pairwise(bounds))


def run_tiled(
    run: Callable[[Tensor], Tensor], clip: Tensor, tile: int, overlap: int, scale: int, batch: int = 1
) -> Tensor:
    """Run `run` on (n, t, 3, h, w) tiles of at most tile + 2 * overlap pixels and blend the
    outputs with linear ramps across the overlaps (weights sum to one), so no seam shows.

    Up to `batch` clips go through `run` at once: more than `batch` windows are split, and tiles
    of equal size are stacked on the batch dimension (each window's tile counts)."""
    h, w = clip.shape[-2:]
    n = clip.shape[0]
    if n > batch:
        return torch.cat([run_tiled(run, part, tile, overlap, scale, batch) for part in clip.split(batch)])
    if tile <= 0 or (h <= tile and w <= tile):
        return run(clip)
    crops: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}  # tiles by input size
    for y0, y1 in tile_spans(h, tile):
        for x0, x1 in tile_spans(w, tile):
            iy0, iy1 = max(0, y0 - overlap), min(h, y1 + overlap)
            ix0, ix1 = max(0, x0 - overlap), min(w, x1 + overlap)
            crops.setdefault((iy1 - iy0, ix1 - ix0), []).append((iy0, iy1, ix0, ix1))
    per_run = max(1, batch // n)
    out = weight_sum = None
    for boxes in crops.values():
        for first in range(0, len(boxes), per_run):
            group = boxes[first : first + per_run]
            parts = run(torch.cat([clip[..., a:b, c:d] for a, b, c, d in group])).float().split(n)
            for (iy0, iy1, ix0, ix1), part in zip(group, parts, strict=True):
                if out is None:
                    out = part.new_zeros(*part.shape[:-2], h * scale, w * scale)
                    weight_sum = part.new_zeros(h * scale, w * scale)
                ramp_y = _ramp(iy1 - iy0, iy0 > 0, iy1 < h, overlap, scale, part.device)
                ramp_x = _ramp(ix1 - ix0, ix0 > 0, ix1 < w, overlap, scale, part.device)
                weight = ramp_y[:, None] * ramp_x[None, :]
                out[..., iy0 * scale : iy1 * scale, ix0 * scale : ix1 * scale] += part * weight
                weight_sum[iy0 * scale : iy1 * scale, ix0 * scale : ix1 * scale] += weight
    return out / weight_sum


def run_count(n: int, h: int, w: int, tile: int, overlap: int, batch: int = 1) -> int:
    """How many calls of `run` run_tiled makes for n clips of h x w (for progress)."""
    if n > batch:
        return sum(run_count(len(part), h, w, tile, overlap, batch) for part in torch.arange(n).split(batch))
    if tile <= 0 or (h <= tile and w <= tile):
        return 1
    sizes: dict[tuple[int, int], int] = {}
    for y0, y1 in tile_spans(h, tile):
        for x0, x1 in tile_spans(w, tile):
            size = (min(h, y1 + overlap) - max(0, y0 - overlap), min(w, x1 + overlap) - max(0, x0 - overlap))
            sizes[size] = sizes.get(size, 0) + 1
    per_run = max(1, batch // n)
    return sum(math.ceil(count / per_run) for count in sizes.values())


def _ramp(length: int, fade_in: bool, fade_out: bool, overlap: int, scale: int, device) -> Tensor:
    """Weights along one axis of a tile's output: rising over the 2 * overlap pixels it shares
    with the tile before, falling over those it shares with the tile after."""
    n = length * scale
    position = torch.arange(n, device=device, dtype=torch.float32) + 0.5
    ramp = torch.ones(n, device=device)
    width = 2 * overlap * scale
    if width == 0:
        return ramp
    if fade_in:
        ramp = torch.minimum(ramp, position / width)
    if fade_out:
        ramp = torch.minimum(ramp, (n - position) / width)
    return ramp.clamp(min=0)
