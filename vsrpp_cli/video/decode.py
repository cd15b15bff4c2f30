"""Decoding: a video file (anything FFmpeg reads, through PyAV) or a folder of frames, to RGB arrays.

YUV is turned into RGB with the matrix and range the input declares; untagged video is taken
as BT.709 from 720 lines up and BT.601 below (the convention players follow), limited range
unless the pixel format says full (yuvj*). Sources deeper than 8 bits come out as uint16.
With `frames(keep_yuv=True)` planar YUV frames are handed on as decoded (colour.Planes), for
conversion on the compute device; other formats are still converted here.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from ..errors import InputError, UsageError
from .colour import MATRIX_OF_TAG, Planes, chroma_cosited, converts_here, read_planes

FRAME_EXTENSIONS = {".png", ".jpg", ".jpeg"}
# Demuxers of elementary streams, whose frames carry no times: the rate is the stream's own.
RAW_STREAMS = {"h264", "hevc", "vvc", "m4v", "mpegvideo", "cavsvideo", "vc1", "obu", "mjpeg", "dirac", "avs2", "avs3"}
DEINTERLACERS = ("bwdif", "yadif")
# What counts as a video file where a folder is read for them (upscale, finetune): by extension.
VIDEO_EXTENSIONS = {
    ".mp4",
    ".mkv",
    ".mov",
    ".webm",
    ".avi",
    ".m4v",
    ".ts",
    ".mts",
    ".m2ts",
    ".flv",
    ".wmv",
    ".mpg",
    ".mpeg",
    ".y4m",
    ".3gp",
}
SWS_COLORSPACE = {
    "bt709": Colorspace.ITU709,
    "bt601": Colorspace.ITU601,
    "fcc": Colorspace.FCC,
    "smpte240m": Colorspace.SMPTE240M,
    "bt2020": Colorspace.BT2020,
}
# What YUV an RGB source (frames, RGB-coded video) is written as: BT.709 in limited range, the
# delivery default every player handles (full-range H.264 is shown washed out by some).
RGB_SOURCE_YUV = ("bt709", False)
CONVERSION = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


@dataclass
class VideoInfo:
    width: int
    height: int
    time_base: Fraction  # of the timestamps below
    frame_rate: Fraction | None  # average; None for a folder of frames without one
    frame_count: int | None  # as the container states it; None where it does not
    bit_depth: int  # 8, 10, 12 or 16
    matrix: str  # "bt709", "bt601", "bt2020", ...
    full_range: bool
    primaries: int = 2  # AVColorPrimaries, 2 = unspecified
    transfer: int = 2  # AVColorTransferCharacteristic
    rotation: int = 0  # degrees counter-clockwise, from the display matrix
    sample_aspect_ratio: Fraction | None = None  # non-square pixels (anamorphic video)
    codec: str = ""
    container_metadata: dict[str, str] = field(default_factory=dict)
    frame_estimate: int | None = None  # from the duration and frame rate, where no count is stated
    interlaced: bool = False  # the first frame is coded as two fields
    alpha: bool = False  # the pixel format carries transparency
    start: Fraction = Fraction(0)  # seconds before the first packet of any stream (a capture's): the output starts at 0


@dataclass
class Frame:
    index: int
    pts: int | None  # in info.time_base
    image: np.ndarray | Planes  # (h, w, 3) RGB uint8, or uint16 for deeper sources; or YUV planes


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
            self.info = self._folder_info()
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
        return self._folder_frames(first) if self.files else self._video_frames(keep_yuv, first, times)

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

    # --------------------------------------------------------------------- frame folders
    def _folder_info(self) -> VideoInfo:
        first = read_image(self.files[0])
        h, w = first.shape[:2]
        depth = 16 if first.dtype == np.uint16 else 8
        rate = self.fps or Fraction(25)
        alpha = _has_alpha(self.files[0])
        return VideoInfo(w, h, 1 / rate, rate, len(self.files), depth, *RGB_SOURCE_YUV, alpha=alpha)

    def _folder_frames(self, first: int = 0) -> Iterator[Frame]:
        for index, file in enumerate(self.files[first:], start=first):
            rgb = read_image(file)
            if rgb.shape[:2] != (self.info.height, self.info.width):
                raise InputError(
                    f"{file.name} is {rgb.shape[1]}x{rgb.shape[0]}, but {self.files[0].name} is "
                    f"{self.info.width}x{self.info.height}: every frame of a folder must be the same size"
                )
            yield Frame(index, index, rgb)

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
            info = self._describe(container, stream, first_frame(container, stream))
        if info.frame_count:
            with self._open() as container:
                info.frame_count -= hidden_at_start(container, container.streams.video[0])
        return info

    def _describe(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, first: av.VideoFrame | None
    ) -> VideoInfo:
        """The input's facts from its container, its video stream and its first decoded frame."""
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise InputError(f"{self.path}: the video stream has no frame size; the file may be damaged")
        pix_fmt = av.VideoFormat(ctx.pix_fmt) if ctx.pix_fmt else None
        depth = max((c.bits for c in pix_fmt.components), default=8) if pix_fmt else 8
        matrix = MATRIX_OF_TAG.get(ctx.colorspace) or ("bt709" if ctx.height >= 720 else "bt601")
        full = ctx.color_range == ColorRange.JPEG or (ctx.pix_fmt or "").startswith("yuvj")
        if pix_fmt is not None and pix_fmt.is_rgb:  # swscale reads RGB as it is, whatever these say
            matrix, full = RGB_SOURCE_YUV
        rate = stream.average_rate or stream.guessed_rate
        if container.format.name in RAW_STREAMS and ctx.framerate:
            rate = ctx.framerate  # the stream's own (H.264's VUI timing), not the raw demuxer's default of 25
        start = container.start_time / av.time_base if container.start_time and container.start_time > 0 else 0
        return VideoInfo(
            width=ctx.width,
            height=ctx.height,
            time_base=stream.time_base or Fraction(1, 90000),
            frame_rate=Fraction(rate) if rate else None,
            frame_count=stream.frames or None,
            frame_estimate=_estimate_frames(container, stream, rate),
            bit_depth=depth,
            matrix=matrix,
            full_range=full,
            primaries=ctx.color_primaries,
            transfer=ctx.color_trc,
            rotation=round(first.rotation) if first is not None and first.rotation else 0,
            interlaced=bool(first is not None and first.interlaced_frame),
            alpha=pix_fmt is not None and any(c.is_alpha for c in pix_fmt.components),
            sample_aspect_ratio=stream.sample_aspect_ratio,
            codec=ctx.name,
            container_metadata=dict(container.metadata),
            start=Fraction(start).limit_denominator(1 << 30),
        )

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


class LiveSource(Source):
    """An input read once, front to back: standard input (`-`), a FIFO, a device. One container
    stays open for the whole run; the audio and subtitle packets met on the way wait in `side`
    for the output to copy (stream.py)."""

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
        return self._describe(self.container, self.video, self.first)

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


def is_live(path: Path) -> bool:
    """An input that can be read only once, front to back: `-` (standard input), a FIFO, a
    device; a regular file or a folder can be read again (for segments, seeks and resumes)."""
    return str(path) == "-" or (path.exists() and not path.is_file() and not path.is_dir())


def first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> av.VideoFrame | None:
    """The first decoded frame: FFmpeg attaches the display rotation (from the container's
    matrix) and the interlacing flags to frames, not to the stream."""
    try:
        return next(container.decode(stream), None)
    except av.error.FFmpegError:
        return None


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


def is_video_file(path: Path) -> bool:
    """The one rule for a video file in a folder of inputs: a file with a video extension."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS


def open_source(
    path: str | Path,
    deinterlace: str = "off",
    notice: Callable[[str], None] = lambda message: None,
    fps: float | None = None,
) -> Source:
    path = Path(path)
    if is_live(path):
        return LiveSource(path, deinterlace, notice, fps)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return Source(path, deinterlace, notice, fps)


def frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()]
    if not files:
        raise InputError(f"{folder}: no PNG or JPEG frames in this folder")
    return sorted(files, key=natural_key)


def natural_key(path: Path) -> list:
    """frame2.png before frame10.png."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def read_image(path: Path) -> np.ndarray:
    """(h, w, 3) RGB, uint8 or uint16 (16-bit PNG), through FFmpeg's image decoders."""
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.error.FFmpegError, StopIteration):
        raise InputError(f"{path}: not a readable image") from None
    deep = any(c.bits > 8 for c in frame.format.components)
    return frame.to_ndarray(format="rgb48le" if deep else "rgb24")


def hidden_at_start(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Packets an edit list hides at the start (an MP4 cut without re-encoding, as `ffmpeg -ss 1
    -c copy` writes): FFmpeg marks them discard and no player shows them, but the container's
    frame count includes them. Read until 64 shown packets in a row (past any reordering)."""
    hidden = shown = 0
    for packet in container.demux(stream):
        if not packet.size:
            continue
        if packet.is_discard:
            hidden, shown = hidden + 1, 0
        else:
            shown += 1
            if shown >= 64:
                break
    return hidden


def _estimate_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream, rate) -> int | None:
    """Frames from the stream's (or else the container's) duration at the average frame rate."""
    if not rate:
        return None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    return max(1, round(seconds * float(rate)))


def _has_alpha(path: Path) -> bool:
    """Whether an image file's pixel format carries transparency (read_image gives colour only)."""
    with av.open(str(path)) as container:
        components = av.VideoFormat(container.streams.video[0].codec_context.pix_fmt).components
    return any(component.is_alpha for component in components)


def _when(pts: int | None, time_base: Fraction) -> str:
    return "at an unknown time" if pts is None else f"at {float(pts * time_base):.3f}s"
