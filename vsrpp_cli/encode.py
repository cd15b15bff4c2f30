"""Encoding: RGB frames back to a video file (with the input's timestamps, colour tags, audio
and subtitles) or to a folder of PNG frames.

RGB goes back to YUV with the matrix and range the input was read with (here through swscale,
or already on the compute device: frames arrive as colour.Planes in `VideoSink.planes_target`),
and the output is tagged with them (plus primaries and transfer), so players show the colours
the input had.
Audio and subtitle packets are copied as they are, interleaved by time; an audio codec the
container cannot hold is transcoded (AAC for MP4/MOV, Opus for WebM) and a subtitle stream it
cannot hold is left out, each with a notice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange

from .colour import TAG_OF_MATRIX, Planes, YuvTarget, chroma_cosited, converts_here, to_video_frame
from .decode import CONVERSION, SWS_COLORSPACE, VideoInfo

CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".webm": "webm"}
DEFAULT_CODEC = {"mp4": "libx264", "matroska": "libx264", "mov": "libx264", "webm": "libvpx-vp9"}
# What each container can hold without transcoding (None: anything FFmpeg can mux there).
AUDIO_OK = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_s16be", "pcm_s24be"},
    "webm": {"opus", "vorbis"},
    "matroska": None,
}
AUDIO_FALLBACK = {"mp4": "aac", "mov": "aac", "webm": "libopus"}
SUBTITLES_OK = {"mp4": {"mov_text"}, "mov": {"mov_text"}, "webm": {"webvtt"}, "matroska": None}
# AVColorPrimaries / AVColorTransferCharacteristic values (libavutil/pixfmt.h).
PRIMARIES_FOR = {"bt709": 1, "bt601": 6, "bt2020": 9, "smpte240m": 7, "fcc": 4}
TRANSFER_FOR = {"bt709": 1, "bt601": 6, "bt2020": 14, "smpte240m": 7, "fcc": 4}
UNSPECIFIED = 2


class OutputError(Exception):
    """An output that cannot be written as asked; the message says what to do."""


def container_for(path: Path) -> str | None:
    """The muxer for a video path, or None for a folder of frames (a path with no extension)."""
    if not path.suffix:
        return None
    if path.suffix.lower() not in CONTAINERS:
        raise OutputError(
            f"{path}: unknown output extension {path.suffix!r}; use .mp4, .mkv, .mov or .webm, "
            "or a folder name (no extension) for PNG frames"
        )
    return CONTAINERS[path.suffix.lower()]


class FrameFolderSink:
    """PNG frames 00000000.png, 00000001.png, ...; 16-bit PNG for sources deeper than 8 bits."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        deep = rgb.dtype == np.uint16
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if deep else "rgb24")
        with av.open(str(self.folder / f"{self.count:08d}.png"), "w", format="image2") as container:
            stream = container.add_stream("png", rate=1)
            stream.width, stream.height = rgb.shape[1], rgb.shape[0]
            stream.pix_fmt = "rgb48be" if deep else "rgb24"
            container.mux(stream.encode(frame))
            container.mux(stream.encode())
        self.count += 1

    def close(self) -> None:
        pass


class VideoSink:
    def __init__(
        self,
        path: Path,
        container_format: str,
        info: VideoInfo,
        size: tuple[int, int],  # output (width, height)
        source: Path | None,  # where audio and subtitles come from
        codec: str | None = None,
        crf: int | None = None,
        preset: str | None = None,
        pix_fmt: str | None = None,
        notice: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.info, self.notice = info, notice
        # Matroska would otherwise shift every stream so that AAC priming (negative audio
        # timestamps copied from MP4) starts at zero, moving the video's timestamps with it.
        options = {"avoid_negative_ts": "disabled"} if container_format in ("matroska", "webm") else {}
        self.container = av.open(str(path), "w", format=container_format, options=options)
        self.container_format = container_format
        try:
            self._add_video(codec or DEFAULT_CODEC[container_format], size, crf, preset, pix_fmt)
            self.container.metadata.update(info.container_metadata)
            self.passthrough = Passthrough(source, self.container, container_format, notice) if source else None
        except BaseException:
            self.container.close()
            raise
        self.frames = 0

    def _add_video(self, codec: str, size: tuple[int, int], crf: int | None, preset: str | None, pix_fmt: str | None):
        info, notice = self.info, self.notice
        try:
            self.stream = self.container.add_stream(codec, rate=info.frame_rate or Fraction(25))
        except (av.error.FFmpegError, ValueError) as error:
            raise OutputError(f"--codec {codec}: not an encoder this FFmpeg has ({error})") from None
        self.pix_fmt = check_pix_fmt(codec, pix_fmt) if pix_fmt else choose_pix_fmt(codec, info.bit_depth, notice)
        # Subsampled chroma (4:2:0, 4:2:2) needs even sizes: repeat the last row or column.
        layout = av.VideoFormat(self.pix_fmt)
        self.width, self.height = size
        pad_w = self.width % 2 if layout.chroma_width(2) != 2 else 0
        pad_h = self.height % 2 if layout.chroma_height(2) != 2 else 0
        if pad_w or pad_h:
            notice(f"{self.pix_fmt} needs even sizes: the last row/column is repeated to make it even")
            self.width, self.height = self.width + pad_w, self.height + pad_h
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = self.pix_fmt
        # The encoder works in the input's time base, so every timestamp survives as it was.
        self.stream.time_base = info.time_base
        self.stream.codec_context.time_base = info.time_base
        self._tag_colour()
        if info.rotation:
            self.stream.set_display_rotation(info.rotation)
        if info.sample_aspect_ratio:
            self.stream.codec_context.sample_aspect_ratio = info.sample_aspect_ratio
        options = {}
        if crf is not None:
            options["crf"] = str(crf)
        if preset is not None:
            options["preset"] = preset
        if codec == "libvpx-vp9" and crf is not None:
            options["b"] = "0"  # constant quality
        self.stream.options = options

    def _tag_colour(self) -> None:
        info, ctx = self.info, self.stream.codec_context
        ctx.colorspace = TAG_OF_MATRIX.get(info.matrix, UNSPECIFIED)
        ctx.color_range = ColorRange.JPEG if info.full_range else ColorRange.MPEG
        ctx.color_primaries = info.primaries if info.primaries != UNSPECIFIED else PRIMARIES_FOR[info.matrix]
        ctx.color_trc = info.transfer if info.transfer != UNSPECIFIED else TRANSFER_FOR[info.matrix]

    @property
    def planes_target(self) -> YuvTarget | None:
        """The YUV frames `write` takes as they are, when the pixel format is one colour.py makes."""
        if not converts_here(self.pix_fmt):
            return None
        cosited = chroma_cosited(self.stream.codec_context.codec.canonical_name)
        return YuvTarget(self.pix_fmt, self.width, self.height, self.info.matrix, self.info.full_range, cosited)

    def write(self, image: np.ndarray | Planes, pts: int | None) -> None:
        frame = to_video_frame(image, self.pix_fmt) if isinstance(image, Planes) else self._from_rgb(image)
        frame.pts = pts if pts is not None else self.frames
        frame.time_base = self.info.time_base
        if self.passthrough:
            self.passthrough.mux_until(float(frame.pts * self.info.time_base))
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def _from_rgb(self, rgb: np.ndarray) -> av.VideoFrame:
        if rgb.shape[0] != self.height or rgb.shape[1] != self.width:
            rgb = np.pad(rgb, ((0, self.height - rgb.shape[0]), (0, self.width - rgb.shape[1]), (0, 0)), mode="edge")
        deep = rgb.dtype == np.uint16
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if deep else "rgb24")
        if av.VideoFormat(self.pix_fmt).is_rgb:
            return frame
        return frame.reformat(
            format=self.pix_fmt,
            dst_colorspace=SWS_COLORSPACE[self.info.matrix],
            src_color_range=ColorRange.JPEG,
            dst_color_range=ColorRange.JPEG if self.info.full_range else ColorRange.MPEG,
            interpolation=CONVERSION,
        )

    def close(self) -> None:
        self.container.mux(self.stream.encode())
        if self.passthrough:
            self.passthrough.mux_until(float("inf"))
            self.passthrough.close()
        self.container.close()

    def abort(self) -> None:
        try:
            if self.passthrough:
                self.passthrough.close()
            self.container.close()
        except Exception:  # the file is deleted next: a failing close must not hide the first error
            pass


class Passthrough:
    """Copies the input's audio and subtitle streams into the output, packet by packet."""

    def __init__(self, source: Path, output: av.container.OutputContainer, fmt: str, notice) -> None:
        self.input = av.open(str(source))
        self.output_streams: dict[int, av.stream.Stream] = {}
        self.transcoders: dict[int, av.audio.stream.AudioStream] = {}
        wanted = []
        for stream in self.input.streams:
            name = stream.codec_context.name if stream.codec_context else "unknown"
            if stream.type == "audio":
                allowed = AUDIO_OK[fmt]
                if allowed is None or name in allowed:
                    self.output_streams[stream.index] = output.add_stream_from_template(stream)
                else:
                    target = AUDIO_FALLBACK[fmt]
                    notice(
                        f"audio stream {stream.index} ({name}) cannot go into {fmt} as it is: transcoded to {target}"
                    )
                    out = output.add_stream(target, rate=stream.rate)
                    out.layout = stream.layout
                    self.output_streams[stream.index] = out
                    self.transcoders[stream.index] = out
                wanted.append(stream)
            elif stream.type == "subtitle":
                allowed = SUBTITLES_OK[fmt]
                if allowed is None or name in allowed:
                    self.output_streams[stream.index] = output.add_stream_from_template(stream)
                    wanted.append(stream)
                else:
                    notice(
                        f"subtitle stream {stream.index} ({name}) cannot go into {fmt}: left out (use .mkv to keep it)"
                    )
        for index, out in self.output_streams.items():
            out.metadata.update(self.input.streams[index].metadata)
        self.packets: Iterator[av.Packet] = self.input.demux(wanted) if wanted else iter(())
        self.pending: av.Packet | None = None
        self.output = output

    def mux_until(self, seconds: float) -> None:
        while True:
            packet = self.pending or next(self.packets, None)
            self.pending = None
            if packet is None:
                return
            if packet.dts is None and packet.size == 0:  # demuxer flush packet
                continue
            when = packet.dts if packet.dts is not None else packet.pts
            if when is not None and float(when * packet.time_base) > seconds:
                self.pending = packet
                return
            self._mux(packet)

    def _mux(self, packet: av.Packet) -> None:
        index = packet.stream.index
        out = self.output_streams[index]
        if index in self.transcoders:
            for frame in packet.decode():
                self.output.mux(out.encode(frame))
            return
        packet.stream = out
        self.output.mux(packet)

    def close(self) -> None:
        for out in self.transcoders.values():
            self.output.mux(out.encode())
        self.transcoders.clear()
        self.input.close()


def encoder_formats(codec: str) -> list[str]:
    try:
        return [f.name for f in av.Codec(codec, "w").video_formats or []]
    except (av.error.FFmpegError, ValueError):
        raise OutputError(f"--codec {codec}: not an encoder this FFmpeg has") from None


def check_pix_fmt(codec: str, pix_fmt: str) -> str:
    formats = encoder_formats(codec)
    if formats and pix_fmt not in formats:
        raise OutputError(f"--pix-fmt {pix_fmt}: {codec} cannot write it; it takes {', '.join(formats)}")
    return pix_fmt


def choose_pix_fmt(codec: str, bit_depth: int, notice: Callable[[str], None]) -> str:
    """4:2:0 at the input's depth (10-bit for deeper input) when the encoder has it."""
    formats = encoder_formats(codec)
    if bit_depth > 8:
        wanted = ["yuv420p10le", "yuv422p10le", "yuv444p10le", "p010le"]  # p010le: NVENC's 10-bit
    else:
        wanted = ["yuv420p", "yuv422p", "yuv444p"]
    for name in wanted:
        if name in formats:
            return name
    if bit_depth > 8 and "yuv420p" in formats:
        notice(f"{codec} here cannot write 10-bit: the output is 8-bit (use libx265 or libx264 for 10-bit)")
        return "yuv420p"
    if not formats:
        raise OutputError(f"--codec {codec}: not a video encoder")
    return formats[0]
