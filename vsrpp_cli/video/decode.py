"""Decoding: a video file (anything FFmpeg reads, through PyAV) or a folder of frames, to RGB arrays.

YUV is turned into RGB with the matrix and range the input declares; untagged video is taken
as BT.709 from 720 lines up and BT.601 below (the convention players follow), limited range
unless the pixel format says full (yuvj*). Sources deeper than 8 bits come out as uint16.
With `frames(keep_yuv=True)` planar YUV frames are handed on as decoded (colour.Planes), for
conversion on the compute device; other formats are still converted here.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from ..errors import InputError, UsageError
from .colour import chroma_cosited, converts_here, read_planes
from .images import folder_frames, folder_info, frame_files
from .info import Frame, VideoInfo, describe, first_frame, hidden_at_start

DEINTERLACERS = ("bwdif", "yadif")
SWS_COLORSPACE = {
    "bt709": Colorspace.ITU709,
    "bt601": Colorspace.ITU601,
    "fcc": Colorspace.FCC,
    "smpte240m": Colorspace.SMPTE240M,
    "bt2020": Colorspace.BT2020,
}
CONVERSION = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


@dataclass
class DecodeReport:
    lost: list[str] = field(default_factory=list)  # what could not be decoded, by time


class Source:
    """One input. `frames()` streams; nothing is held beyond the frame being converted."""

    live = False  # read once, front to back (LiveSource)

    def __init__(
        self,
        path: Path,
        deinterlace: str = "off",
        notice: Callable[[str], None] = lambda m: None,
        fps: float | None = None,
    ) -> None:
        self.path = path
        self.deinterlace, self.notice = deinterlace, notice
        self.fps = Fraction(fps).limit_denominator(1001) if fps else None  # for frames that carry no time
        self.report = DecodeReport()
        self.undecodable = 0  # packets that failed to decode (reported each)
        self.resized = False  # a frame of another size was met (said once)
        if not self.live and path.is_dir():
            self.files = frame_files(path)
            self.info = folder_info(self.files, self.fps)
        else:
            self.files = []
            self.info = self._video_info()
        self.deinterlacer = self._choose_deinterlacer(deinterlace)
        if self.info.alpha:
            notice(
                "the input has an alpha channel (transparency): BasicVSR++ upscales colour only, so the "
                "output has none (the alpha channel is dropped)"
            )

    def _choose_deinterlacer(self, choice: str) -> str | None:
        """FFmpeg's bwdif or yadif, one frame out per frame in (the frame rate and timestamps kept),
        applied to the frames coded as interlaced; None for progressive treatment."""
        if choice not in (*DEINTERLACERS, "auto", "off"):
            raise UsageError(f"--deinterlace {choice}: choose auto, {', '.join(DEINTERLACERS)} or off")
        if not self.info.interlaced:
            return None if choice in ("auto", "off") else choice
        if choice == "off":
            self.notice(
                "the input is interlaced and is treated as progressive (--deinterlace off): moving edges will "
                "show combing, which the network sharpens; --deinterlace auto removes it"
            )
            return None
        name = "bwdif" if choice == "auto" else choice
        self.notice(
            f"the input is interlaced: deinterlaced with FFmpeg's {name} (frame rate kept; "
            "--deinterlace off keeps the fields)"
        )
        return name

    def frames(self, keep_yuv: bool = False, first: int = 0, times: list[int] | None = None) -> Iterator[Frame]:
        """Every frame from frame `first` on. A video seeks to the keyframe before it and knows
        each frame's index from its timestamp: exactly with `times` (frame_times()), else at the
        average frame rate (exact for constant-rate video)."""
        return folder_frames(self.files, self.info, first) if self.files else self._video_frames(keep_yuv, first, times)

    def frame_times(self) -> list[int]:
        """Every frame's timestamp in presentation order, from the packets alone (no decoding):
        what lets a worker seek to frame i of a variable-rate video exactly."""
        if self.files:
            return list(range(len(self.files)))
        with self._open() as container:
            stream = container.streams.video[0]
            # Packets an edit list hides (a cut made without re-encoding) are never shown: no frame.
            times = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size and not p.is_discard)
        if not times:
            raise InputError(f"{self.path}: its video packets carry no timestamps; it cannot be shared among workers")
        return times

    # --------------------------------------------------------------------- video files
    def _open(self) -> av.container.InputContainer:
        try:
            container = av.open(str(self.path))
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file") from None
        except (av.error.InvalidDataError, av.error.FFmpegError) as error:
            raise InputError(f"{self.path}: not a video FFmpeg can read ({error.strerror or error})") from None
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
            container.close()
            raise InputError(f"{self.path}: has no video stream (it holds {kinds}); give a video file")
        return container

    def _video_info(self) -> VideoInfo:
        with self._open() as container:
            stream = container.streams.video[0]
            info = describe(self.path, container, stream, first_frame(container, stream))
        if info.frame_count:
            with self._open() as container:
                info.frame_count -= hidden_at_start(container, container.streams.video[0])
        return info

    def _video_frames(self, keep_yuv: bool, first: int = 0, times: list[int] | None = None) -> Iterator[Frame]:
        """From frame `first` on: by a seek where it lands on or before it, else (a container
        whose seek overshoots or finds nothing: MPEG-TS with few keyframes) read from the start."""
        if first > 0:
            landed = self._decode_from(keep_yuv, first, times, seek=True)
            head = next(landed, None)
            if head is not None and head.index == first:
                yield head
                yield from landed
                return
            landed.close()
        yield from self._decode_from(keep_yuv, first, times, seek=False)

    def _decode_from(self, keep_yuv: bool, first: int, times: list[int] | None, seek: bool) -> Iterator[Frame]:
        with self._open() as container:
            stream = container.streams.video[0]
            # Frame threading drops the frames it holds when a packet fails (a truncated file loses
            # its last good frames silently); slice threading keeps every frame that decodes.
            stream.thread_type = "SLICE"
            if seek:
                # From the keyframe before two frames ahead of the one wanted: a deinterlacer
                # then sees the fields before it, as it would have in a run from the start.
                ahead = max(0, first - 2)
                rate = self.fps or self.info.frame_rate or Fraction(25)
                origin = stream.start_time or 0
                target = times[ahead] if times else origin + int((ahead - 0.5) / (rate * self.info.time_base))
                container.seek(target, stream=stream, backward=True)
            deinterlace = Deinterlacer(self.deinterlacer, stream) if self.deinterlacer else None
            decoded = self._decoded(container.demux(stream), stream, deinterlace)
            yield from self._converted(decoded, stream.start_time or 0, keep_yuv, first, times)

    def _converted(
        self, decoded: Iterator[av.VideoFrame], origin: int, keep_yuv: bool, first: int, times: list[int] | None
    ) -> Iterator[Frame]:
        """Decoded frames as Frames: each one's index in the video (from `first` on), its time, and
        its image as YUV planes (`keep_yuv`, for conversion on the device) or RGB."""
        info = self.info
        out_format = "rgb48le" if info.bit_depth > 8 else "rgb24"
        rate = self.fps or info.frame_rate or Fraction(25)
        index: int | None = None if first > 0 else 0  # after a seek: known from the first frame's time
        timed = False  # said that frames are timed from the rate
        last = None  # the last frame's time
        for frame in decoded:
            if index is None and times is not None:
                index = bisect.bisect_left(times, frame.pts) if frame.pts is not None else first
            elif index is None:
                index = round((frame.pts - origin) * info.time_base * rate) if frame.pts is not None else first
            if index < first:
                index += 1
                continue
            pts = frame.pts
            if pts is None:  # a raw stream (.h264, .hevc, .ivf): times from the frame rate
                pts = origin + round(index / (rate * info.time_base))
                if not timed:
                    self.notice(f"the input's frames carry no timestamps: timed at {float(rate):g} frames/s "
                                "(--fps sets another rate)")  # fmt: skip
                    timed = True
            if (frame.width, frame.height) != (info.width, info.height):
                frame = self._first_size(frame)
            if keep_yuv and converts_here(frame.format.name):
                cosited = chroma_cosited(info.codec)
                image = read_planes(frame, info.matrix, info.full_range, cosited)
            else:
                image = frame.reformat(
                    format=out_format,
                    src_colorspace=SWS_COLORSPACE[info.matrix],
                    src_color_range=ColorRange.JPEG if info.full_range else ColorRange.MPEG,
                    dst_color_range=ColorRange.JPEG,
                    interpolation=CONVERSION,
                ).to_ndarray()
            if frame.is_corrupt:
                self.report.lost.append(f"the frame {_when(frame.pts, info.time_base)} is damaged (kept as decoded)")
            yield Frame(index, pts, image)
            last = pts
            index += 1
        if not index and not first:
            raise InputError(f"{self.path}: no frame could be decoded; the file is damaged or empty")
        if index is not None and last is not None:
            self._check_end(index, last, origin, rate)

    def _first_size(self, frame: av.VideoFrame) -> av.VideoFrame:
        """A frame of another size (a capture whose size changed, two streams joined) scaled to
        the first frame's, as FFmpeg's filters scale it: one output size, said once."""
        info = self.info
        if not self.resized:
            self.resized = True
            self.notice(
                f"the input's frame size changes to {frame.width}x{frame.height} {_when(frame.pts, info.time_base)}: "
                f"those frames are scaled to {info.width}x{info.height}, the first frames' size"
            )
        scaled = frame.reformat(width=info.width, height=info.height, interpolation=Interpolation.BICUBIC)
        scaled.pts, scaled.time_base = frame.pts, frame.time_base
        return scaled

    def _check_end(self, decoded: int, last_pts: int, origin: int, rate: Fraction) -> None:
        """Frames missing at the end: against the count the container states, or (Matroska,
        WebM and others state none) against its duration, beyond two frames' tolerance. Packets
        that could not be decoded are reported apart, so they are not counted here again."""
        info = self.info
        if info.frame_count:
            missing = info.frame_count - decoded - self.undecodable
            if missing > 0:
                self.report.lost.append(f"{missing} of {info.frame_count} frames are missing: the file ends early")
        elif info.frame_estimate:
            ends = float((last_pts - origin) * info.time_base + 1 / rate)
            stated = info.frame_estimate / float(rate)
            if stated - ends > max(2 / float(rate), 0.25):
                missing = round((stated - ends) * float(rate))
                self.report.lost.append(
                    f"the file ends early: its frames stop at {ends:.3f} s of the {stated:.3f} s it states "
                    f"(about {missing} frames missing)"
                )

    def _decoded(
        self, packets: Iterator[av.Packet], stream: av.video.stream.VideoStream, deinterlace: Deinterlacer | None
    ) -> Iterator[av.VideoFrame]:
        """The video stream's frames from `packets`; other streams' packets go to `side_packet`."""
        for packet in packets:
            if packet.stream.index != stream.index:
                self.side_packet(packet)
                continue
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                self.report.lost.append(f"the packet {_when(packet.pts, packet.time_base)} could not be decoded")
                self.undecodable += 1
                continue
            for frame in decoded:
                yield from deinterlace(frame) if deinterlace else (frame,)
        if deinterlace:
            yield from deinterlace(None)

    def side_packet(self, packet: av.Packet) -> None:
        """An audio or subtitle packet met while reading the video (a live source's)."""

    def close(self) -> None:
        """A file or folder holds nothing open between reads (a live source does)."""


class Deinterlacer:
    """FFmpeg's deinterlacing filter through PyAV's filter graph: frames in, frames out (one
    behind), timestamps brought back to the stream's time base (the filter doubles it)."""

    def __init__(self, name: str, stream: av.video.stream.VideoStream) -> None:
        self.time_base = stream.time_base
        self.graph = av.filter.Graph()
        source = self.graph.add_buffer(template=stream)
        fields = self.graph.add(name, "mode=send_frame:parity=auto:deint=interlaced")
        sink = self.graph.add("buffersink")
        source.link_to(fields)
        fields.link_to(sink)
        self.graph.configure()

    def __call__(self, frame: av.VideoFrame | None) -> Iterator[av.VideoFrame]:
        self.graph.vpush(frame)  # None: the end, flush what is held
        while True:
            try:
                out = self.graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            if out.pts is not None:
                out.pts = round(out.pts * out.time_base / self.time_base)
            yield out


def _when(pts: int | None, time_base: Fraction) -> str:
    return "at an unknown time" if pts is None else f"at {float(pts * time_base):.3f}s"
