"""Inputs read once, front to back (standard input, a FIFO, a device): one container open for
the whole run, its audio and subtitle packets kept for the output as they are met."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import av

from ..errors import InputError
from .decode import Deinterlacer, Source
from .info import Frame, VideoInfo, describe


class LiveSource(Source):
    """An input read once, front to back: standard input (`-`), a FIFO, a device. One container
    stays open for the whole run; the audio and subtitle packets met on the way wait in `side`
    for the output to copy (run/one_pass.py)."""

    live = True

    def __init__(
        self, path: Path, deinterlace: str = "off", notice: Callable[[str], None] = lambda m: None,
        fps: float | None = None,
    ) -> None:  # fmt: skip
        self.url = "pipe:0" if str(path) == "-" else str(path)
        name = Path("standard input") if str(path) == "-" else path
        self.side: deque[av.Packet] = deque()
        self.first: av.VideoFrame | None = None  # decoded while the input was described
        self.path = name
        self.container = self._open()
        try:
            self.video = self.container.streams.video[0]
            self.video.thread_type = "SLICE"  # as Source._video_frames, for the same reason
            wanted = [s for s in self.container.streams if s.type in ("video", "audio", "subtitle")]
            self.raw = self._decoded(self.container.demux(wanted), self.video, None)
            super().__init__(name, deinterlace, notice, fps)
        except BaseException:
            self.container.close()
            raise

    @property
    def streams(self) -> list[av.stream.Stream]:
        """The input's audio and subtitle streams, whose packets arrive in `side`."""
        return [s for s in self.container.streams if s.type in ("audio", "subtitle")]

    def _open(self) -> av.container.InputContainer:
        try:
            container = av.open(self.url)
        except (av.error.InvalidDataError, av.error.FFmpegError) as error:
            raise InputError(
                f"{self.path}: not a video stream FFmpeg can read ({error.strerror or error}); send Matroska, NUT, "
                "MPEG-TS or yuv4mpegpipe (e.g. ffmpeg -i in.mov -f matroska -)"
            ) from None
        if not container.streams.video:
            container.close()
            raise InputError(f"{self.path}: the stream holds no video")
        return container

    def _video_info(self) -> VideoInfo:
        self.first = self._next_raw()
        return describe(self.path, self.container, self.video, self.first)

    def _next_raw(self) -> av.VideoFrame | None:
        try:
            return next(self.raw, None)
        except av.error.FFmpegError as error:
            raise InputError(f"{self.path}: reading the stream failed ({error.strerror or error})") from None

    def frame_times(self) -> list[int]:
        raise InputError(f"{self.path} is read once, front to back: its frames cannot be shared among workers")

    def _video_frames(self, keep_yuv: bool, first: int = 0, times: list[int] | None = None) -> Iterator[Frame]:
        if first or times:
            raise InputError(f"{self.path} is read once, front to back: it cannot be read from frame {first}")
        deinterlace = Deinterlacer(self.deinterlacer, self.video) if self.deinterlacer else None
        yield from self._converted(self._deinterlaced(deinterlace), self.video.start_time or 0, keep_yuv, 0, None)

    def _deinterlaced(self, deinterlace: Deinterlacer | None) -> Iterator[av.VideoFrame]:
        first, self.first = self.first, None
        for frame in itertools.chain([first] if first is not None else [], iter(self._next_raw, None)):
            yield from deinterlace(frame) if deinterlace else (frame,)
        if deinterlace:
            yield from deinterlace(None)

    def side_packet(self, packet: av.Packet) -> None:
        if packet.size:  # not the demuxer's end-of-stream marker
            self.side.append(packet)

    def close(self) -> None:
        self.container.close()
