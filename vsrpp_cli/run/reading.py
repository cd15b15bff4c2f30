"""A worker's reading: frames [start, stop) of the input for its windows, decoded in a thread
of their own a few frames ahead of the network."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator

from ..errors import InputError
from ..video.decode import Source
from ..video.info import Frame

QUEUE_FRAMES = 8  # decoded frames waiting for the network, and upscaled ones waiting for the encoder
_END = object()


# ----------------------------------------------------------------------------- reading
class FrameReader:
    """Frames [start, stop) of the input, for windows asked in order or not. A read goes on from
    where the last ended (the `behind` frames before it are kept for the next window's context);
    anything else seeks by the exact table of frame times, or, without one (a single process),
    reads on (from the start if need be). The first frame after a seek must be the one asked for."""

    def __init__(self, source: Source, keep_yuv: bool, times: list[int] | None, behind: int) -> None:
        self.source, self.keep_yuv, self.times = source, keep_yuv, times
        self.recent: deque[Frame] = deque(maxlen=max(1, behind))
        self.frames: Iterator[Frame] | None = None
        self.ahead: Frame | None = None  # read from the decoder, not yet asked for
        self.position = 0  # the index of the next frame from the decoder

    def read(self, start: int, stop: int) -> Iterator[Frame]:
        held = [f for f in self.recent if f.index >= start]
        reads_on = (held and held[0].index == start) or start == self.position
        if self.frames is not None and (reads_on or (start > self.position and self.times is None)):
            yield from (f for f in held if f.index < stop)
        else:
            self._seek(start if self.times is not None else 0)
        while (frame := self._next()) is not None:
            if frame.index >= stop:
                self.ahead, self.position = frame, frame.index
                return
            self.recent.append(frame)
            if frame.index >= start:
                yield frame
            if frame.index == stop - 1:
                return

    def _next(self) -> Frame | None:
        frame, self.ahead = self.ahead, None
        if frame is None and self.frames is not None:
            frame = next(self.frames, None)
        if frame is not None:
            self.position = frame.index + 1
        return frame

    def _seek(self, start: int) -> None:
        self.close()
        self.recent.clear()
        self.frames = in_background(self.source.frames(self.keep_yuv, first=start, times=self.times))
        self.ahead, self.position = next(self.frames, None), start
        first = self.ahead
        if first is not None and (first.index != start or (self.times and first.pts != self.times[start])):
            raise InputError(
                f"{self.source.path}: seeking to frame {start} gave frame {first.index} (pts {first.pts}) instead; "
                "its packets' timestamps do not match its frames: run it with one process (--nproc-per-node 1)"
            )

    def close(self) -> None:
        if self.frames is not None:
            self.frames.close()  # type: ignore[attr-defined]
            self.frames = None



def in_background(items: Iterator, maxsize: int = QUEUE_FRAMES) -> Iterator:
    """Produce `items` in a thread, `maxsize` ahead at most; its exceptions surface here. Closing
    this generator (or a failure of its consumer) stops the thread and closes `items` (and so
    the input file) before it returns."""
    channel: queue.Queue = queue.Queue(maxsize)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                channel.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over(item):
                    return
            hand_over(_END)
        except BaseException as error:  # handed to the consumer
            hand_over(error)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, daemon=True, name="vsrpp-decode")
    thread.start()
    try:
        while (item := channel.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
