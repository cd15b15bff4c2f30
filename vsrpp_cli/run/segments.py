"""Segments, the unit of work: the output frames of a fixed number of consecutive windows, from
a fresh encoder, so each starts on a keyframe and stands alone (`VideoSegment`, or PNG files:
`FrameSegment`), encoded in a thread of their own (`SegmentWriter`) into a folder as they come
(never whole in memory; intake.py takes the folder to the writer). The windows of a segment still
being worked are kept losslessly in the worker's `Spool` (FFV1 in Matroska, bit-exact for 8- and
16-bit RGB and for the planar YUV formats the encoder takes), written in a thread of its own
(`SpoolWriter`), so an interruption costs at most a window or two of network work; they go when their
segment is committed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import OutputError
from ..video.colour import Planes
from ..video.encode import EncoderSettings, VideoEncoder
from ..video.images import png_bytes
from ..video.info import VideoInfo
from ..video.mux import StoredPacket
from .folder import Spool
from .reading import QUEUE_FRAMES


def spool_folder(run_id: str, rank: int) -> Path:
    """Where a worker on a machine without the run's folder keeps its lossless windows (kept for
    --resume): a folder of its own, which it removes when it ends with nothing in it."""
    folder = Path(tempfile.gettempdir()) / f"vsrpp-spool-{run_id}-{rank}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def segment_maker(
    settings: EncoderSettings, info: VideoInfo, size: tuple[int, int]
) -> Callable[[Path], VideoSegment | FrameSegment]:
    """What opens a segment of the output in a folder: a fresh encoder for a video, PNG files
    for frames."""

    def new_segment(folder: Path) -> VideoSegment | FrameSegment:
        if settings.container_format is None:
            return FrameSegment(folder)
        return VideoSegment(lambda: VideoEncoder(settings, info, size), folder)

    return new_segment


# ----------------------------------------------------------------------------- threads
def spool_seconds() -> float:
    """How long a writing thread (the spool's, a segment's encoder) may go without finishing an
    item before its disk counts as stuck (a network file system that stopped answering): a window
    of 4K frames takes seconds."""
    return float(os.environ.get("VSRPP_SPOOL_SECONDS", 600))


class WriterThread:
    """Items handed to a thread of their own that writes them: a bounded queue, the first error
    kept and raised at the next hand-over or wait, and no wait longer than `spool_seconds()`
    without an item finished, so a disk that stopped answering ends the run with one line (a
    one-process run has no other watch over its disk; a shared run's writer would see the worker
    stall too). A stuck thread is left behind (a daemon), never waited on again."""

    def __init__(self, folder: Path, maxsize: int, name: str) -> None:
        self.folder = folder  # where the thread writes, for the error's line
        self.channel: queue.Queue = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.handed = self.finished = 0  # items handed over, items written (or failed)
        self.progress = threading.Condition()
        self.stuck = False
        self.thread = threading.Thread(target=self._consume, daemon=True, name=name)
        self.thread.start()

    def write(self, item: Any) -> None:
        raise NotImplementedError

    def _consume(self) -> None:
        while (item := self.channel.get()) is not _DONE:
            try:
                if self.error is None:
                    self.write(item)
            except BaseException as error:
                self.error = error
            finally:
                with self.progress:
                    self.finished += 1
                    self.progress.notify_all()

    def hand_over(self, item: Any) -> None:
        if self.error:
            raise self.error
        try:
            self.channel.put(item, timeout=spool_seconds())
        except queue.Full:
            raise self._stuck_error() from None
        self.handed += 1

    def wait_written(self) -> None:
        """Every item handed over is written, or the error of one is raised; each item has its
        own time, so a slow disk that moves is not cut off."""
        with self.progress:
            while self.finished < self.handed:
                seen = self.finished
                if not self.progress.wait_for(lambda seen=seen: self.finished != seen, timeout=spool_seconds()):
                    raise self._stuck_error()
        if self.error:
            raise self.error

    def end_thread(self) -> None:
        """The thread ends once what was handed over is written; a stuck one is left."""
        if self.stuck or not self.thread.is_alive():
            return
        with contextlib.suppress(queue.Full):
            self.channel.put(_DONE, timeout=spool_seconds())
            self.thread.join(spool_seconds())

    def _stuck_error(self) -> OutputError:
        self.stuck = True
        return OutputError(
            f"a write to {self.folder} has not finished in {spool_seconds():.0f} s (a disk or network file system "
            "that stopped answering?); what is on disk is kept: run the same command with --resume once it answers"
        )


class SegmentWriter(WriterThread):
    """Encodes one segment in a thread; an encoder error is raised at the next put or finish."""

    def __init__(self, new_segment: Callable[[], Any], folder: Path, maxsize: int = QUEUE_FRAMES) -> None:
        self.new_segment = new_segment
        self.segment: Any = None
        super().__init__(folder, maxsize, "vsrpp-encode")

    def write(self, item: tuple[Any, int | None] | object) -> None:
        if item is _CLOSE:
            self.segment.close()
            self.segment = None
            return
        if self.segment is None:
            self.segment = self.new_segment()
        self.segment.write(*item)

    def put(self, image: Any, pts: int | None) -> None:
        self.hand_over((image, pts))

    def finish(self) -> None:
        """Once every frame is encoded and the segment's files are closed. The close runs in the
        thread too, under the same deadline: the encoder's flush encodes and writes every frame
        it held back (x264's lookahead: dozens)."""
        self.hand_over(_CLOSE)
        self.wait_written()
        self.end_thread()

    def abort(self) -> None:
        self.end_thread()
        if self.segment is not None and not self.stuck:
            with contextlib.suppress(Exception):  # after another failure: that one is reported
                self.segment.abort()
            self.segment = None


class SpoolWriter(WriterThread):
    """The spool's windows written in a thread of their own: the network's thread hands a window
    over and goes on to its next forward (FFV1-encoding and fsyncing a window of 4K frames takes
    seconds of CPU). One window waits at most. `reached` is called in the spool's thread before
    each write (failpoint spool)."""

    def __init__(self, spool: Spool, reached: Callable[[], None] = lambda: None) -> None:
        self.spool, self.reached = spool, reached
        self.seconds_waiting = 0.0  # the network's thread blocked on a window still being written
        super().__init__(spool.folder, 1, "vsrpp-spool")

    def write(self, item: tuple[int, list]) -> None:
        self.reached()
        self.spool.save_window(*item)

    def save(self, index: int, frames: list) -> None:
        began = time.perf_counter()
        self.hand_over((index, frames))
        self.seconds_waiting += time.perf_counter() - began

    def flush(self) -> None:
        """Every window handed over is on disk (before its segment's windows are dropped)."""
        self.wait_written()

    def close(self) -> None:
        """The windows handed over are written (what was computed is kept for --resume), then the
        thread ends; a write's error is not raised here (it is the run's, or after another)."""
        self.end_thread()


_DONE = object()  # ends a writing thread
_CLOSE = object()  # closes a segment in its encoder's thread


class VideoSegment:
    """One segment of a video output being encoded: a fresh encoder, its packets written to the
    folder's `packets` as they come, their index to `index.json` at the end."""

    def __init__(self, make_encoder: Callable[[], VideoEncoder], folder: Path) -> None:
        self.encoder = make_encoder()
        self.folder = folder
        self.payload = open(folder / "packets", "wb")  # noqa: SIM115 (closed by close or abort)
        self.packets: list[StoredPacket] = []

    def write(self, image: np.ndarray | Planes, pts: int | None) -> None:
        self._keep(self.encoder.encode(image, pts))

    def _keep(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            data = bytes(packet)
            self.payload.write(data)
            self.packets.append(StoredPacket(int(packet.pts), int(packet.duration or 0), packet.is_keyframe, len(data)))

    def close(self) -> None:
        self._keep(self.encoder.flush())
        self.encoder.close()
        self.payload.close()
        index = json.dumps({"packets": [dataclasses.astuple(p) for p in self.packets]}, indent=2).encode()
        (self.folder / "index.json").write_bytes(index)

    def abort(self) -> None:
        self.payload.close()
        self.encoder.close()


class FrameSegment:
    """One segment of a frames-folder output: its PNG files, named in order within the segment."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def write(self, image: np.ndarray, pts: int | None) -> None:
        (self.folder / f"{self.count:08d}.png").write_bytes(png_bytes(image))
        self.count += 1

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass
