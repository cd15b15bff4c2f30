"""Encoding: RGB frames back to a video file (with the input's timestamps, colour tags, audio
and subtitles) or to a folder of PNG frames.

A video is encoded segment by segment (`VideoEncoder`, a fresh encoder each, so each starts on a
keyframe), and the segments' packets are joined into the file by `Muxer` without re-encoding.
Both set the stream up with `add_video_stream`, so the file's headers match every segment's.
Encoder settings are checked, by opening the encoder, before any work (`check_encoder_settings`).

RGB goes back to YUV with the matrix and range the input was read with (here through swscale,
or already on the compute device: frames arrive as colour.Planes in `VideoEncoder.planes_target`),
and the output is tagged with them (plus primaries and transfer), so players show the colours
the input had.
Audio and subtitle packets are copied as they are, interleaved by time; an audio codec the
container cannot hold is transcoded (AAC for MP4/MOV, Opus for WebM) and a subtitle stream it
cannot hold is left out, each with a notice.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
from av.video.reformatter import ColorRange

from ..errors import EncoderError, UsageError
from .colour import TAG_OF_MATRIX, Planes, YuvTarget, chroma_cosited, converts_here, to_video_frame
from .decode import CONVERSION, SWS_COLORSPACE
from .encoders import encoder_options
from .info import VideoInfo

CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".webm": "webm"}
# What `-` (standard output) can be written as (--format): formats FFmpeg writes to a pipe as it goes.
STREAM_FORMATS = ("matroska", "nut", "mpegts", "yuv4mpegpipe")
DEFAULT_CODEC = {"mp4": "libx264", "matroska": "libx264", "mov": "libx264", "webm": "libvpx-vp9", "nut": "libx264",
                 "mpegts": "libx264", "yuv4mpegpipe": "rawvideo"}  # fmt: skip
CONTAINER_HINTS = {
    "webm": "WebM takes VP8, VP9 and AV1: use libvpx-vp9 or libsvtav1, or a .mkv output",
    "mp4": "use libx264, libx265 or libsvtav1, or a .mkv output",
    "mov": "use libx264 or libx265, or a .mkv output",
    "yuv4mpegpipe": "it holds raw frames only: leave --codec out, or choose --format matroska",
}
# AVColorPrimaries / AVColorTransferCharacteristic values (libavutil/pixfmt.h).
PRIMARIES_FOR = {"bt709": 1, "bt601": 6, "bt2020": 9, "smpte240m": 7, "fcc": 4}
TRANSFER_FOR = {"bt709": 1, "bt601": 6, "bt2020": 14, "smpte240m": 7, "fcc": 4}
UNSPECIFIED = 2


def container_for(path: Path, stream_format: str | None = None) -> str | None:
    """The muxer for a video path, or None for a folder of frames (a path with no extension);
    `-` (standard output) is Matroska unless `stream_format` (--format) says otherwise."""
    if stream_format is not None and str(path) != "-":
        raise UsageError(f"--format {stream_format} is for `-` (standard output); a file's format is its extension")
    if str(path) == "-":
        if (stream_format or "matroska") not in STREAM_FORMATS:
            raise UsageError(f"--format {stream_format}: standard output takes {', '.join(STREAM_FORMATS)}")
        return stream_format or "matroska"
    if not path.suffix:
        return None
    if path.suffix.lower() not in CONTAINERS:
        raise UsageError(
            f"{path}: unknown output extension {path.suffix!r}; use .mp4, .mkv, .mov or .webm, "
            "or a folder name (no extension) for PNG frames"
        )
    return CONTAINERS[path.suffix.lower()]


@dataclass(frozen=True)
class EncoderSettings:
    """The output's video encoder, as the user asked for it (None: the default for the container)."""

    container_format: str
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None

    @property
    def codec_name(self) -> str:
        return self.codec or DEFAULT_CODEC[self.container_format]


def add_video_stream(
    container: av.container.OutputContainer,
    settings: EncoderSettings,
    info: VideoInfo,
    size: tuple[int, int],
    notice: Callable[[str], None] = lambda message: None,
) -> av.video.stream.VideoStream:
    """The output's video stream, configured the same way wherever it is made: for each
    segment's encoder and for the final file, whose headers must match the segments' packets."""
    codec = settings.codec_name
    check_codec(codec, settings.container_format)
    try:
        stream = container.add_stream(codec, rate=info.frame_rate or Fraction(25))
    except ValueError:  # PyAV: "'webm' format does not support 'libx265' codec"
        fmt = settings.container_format
        suffix = next((f"a {ext} file" for ext, name in CONTAINERS.items() if name == fmt), f"--format {fmt}")
        hint = CONTAINER_HINTS.get(fmt, "choose another codec, or a .mkv output")
        raise EncoderError(f"--codec {codec}: {suffix} cannot hold it; {hint}") from None
    except av.error.FFmpegError as error:
        raise EncoderError(f"--codec {codec}: not an encoder this FFmpeg has ({error})") from None
    pix_fmt = (
        check_pix_fmt(codec, settings.pix_fmt) if settings.pix_fmt else choose_pix_fmt(codec, info.bit_depth, notice)
    )
    # Subsampled chroma (4:2:0, 4:2:2) needs even sizes: repeat the last row or column.
    layout = av.VideoFormat(pix_fmt)
    width, height = size
    pad_w = width % 2 if layout.chroma_width(2) != 2 else 0
    pad_h = height % 2 if layout.chroma_height(2) != 2 else 0
    if pad_w or pad_h:
        notice(f"{pix_fmt} needs even sizes: the last row/column is repeated to make it even")
    stream.width, stream.height = width + pad_w, height + pad_h
    stream.pix_fmt = pix_fmt
    # The encoder works in the input's time base, so every timestamp survives as it was; a
    # yuv4mpegpipe stream states its frame rate as 1 / time base (libavformat/yuv4mpegenc.c).
    time_base = 1 / (info.frame_rate or Fraction(25)) if settings.container_format == "yuv4mpegpipe" else info.time_base
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    ctx = stream.codec_context
    ctx.colorspace = TAG_OF_MATRIX.get(info.matrix, UNSPECIFIED)
    ctx.color_range = ColorRange.JPEG if info.full_range else ColorRange.MPEG
    ctx.color_primaries = info.primaries if info.primaries != UNSPECIFIED else PRIMARIES_FOR[info.matrix]
    ctx.color_trc = info.transfer if info.transfer != UNSPECIFIED else TRANSFER_FOR[info.matrix]
    if info.sample_aspect_ratio:
        ctx.sample_aspect_ratio = info.sample_aspect_ratio
    options = encoder_options(codec, info.full_range)
    if settings.crf is not None:
        options["crf"] = str(settings.crf)
        if codec in ("libvpx-vp9", "libvpx"):
            options["b"] = "0"  # constant quality
    if settings.preset is not None:
        options["preset"] = settings.preset
    stream.options = options
    return stream


def open_encoder(stream: av.video.stream.VideoStream, settings: EncoderSettings) -> None:
    """Open the encoder now, so that settings it refuses fail before any work, in words."""
    codec = settings.codec_name
    if settings.preset is not None and settings.preset not in PRESETS.get(codec, (settings.preset,)):
        # Checked here: x264 would print its own complaint straight to the terminal.
        raise EncoderError(
            f"--preset {settings.preset}: not a {codec} preset; choose one of {', '.join(PRESETS[codec])}"
        )
    try:
        with av.logging.Capture():  # FFmpeg's own complaint is replaced by the advice below
            stream.codec_context.open()
    except av.error.FFmpegError:
        given = " ".join(
            f"--{name} {value}"
            for name, value in (("preset", settings.preset), ("crf", settings.crf), ("pix-fmt", settings.pix_fmt))
            if value is not None
        )
        raise EncoderError(f"{codec} refused {given or 'its default settings'}; try other values") from None


class VideoEncoder:
    """One run of the output's video encoder, in memory: frames in, compressed packets out. Each
    segment of the output gets a fresh one, so every segment starts on a keyframe and stands
    alone. The stream sits in an in-memory container of the output's format so that it is set up
    exactly as the final file's (global headers for MP4 and Matroska); nothing is muxed there."""

    def __init__(
        self,
        settings: EncoderSettings,
        info: VideoInfo,
        size: tuple[int, int],
        notice: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.settings, self.info = settings, info
        self.container = av.open(io.BytesIO(), "w", format=settings.container_format)
        try:
            self.stream = add_video_stream(self.container, settings, info, size, notice)
            open_encoder(self.stream, settings)
        except BaseException:
            self.container.close()
            raise
        self.pix_fmt = self.stream.pix_fmt
        self.width, self.height = self.stream.width, self.stream.height
        self.frames = 0

    @property
    def planes_target(self) -> YuvTarget | None:
        """The YUV frames `encode` takes as they are, when the pixel format is one colour.py makes."""
        if not converts_here(self.pix_fmt):
            return None
        cosited = chroma_cosited(self.stream.codec_context.codec.canonical_name)
        return YuvTarget(self.pix_fmt, self.width, self.height, self.info.matrix, self.info.full_range, cosited)

    def encode(self, image: np.ndarray | Planes, pts: int | None) -> list[av.Packet]:
        frame = to_video_frame(image, self.pix_fmt) if isinstance(image, Planes) else self._from_rgb(image)
        frame.pts = pts if pts is not None else self.frames
        frame.time_base = self.info.time_base
        self.frames += 1
        return self.stream.encode(frame)

    def flush(self) -> list[av.Packet]:
        return self.stream.encode()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # nothing was muxed into it: a header-less close may complain
            self.container.close()

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


def muxer_target(settings: EncoderSettings, info: VideoInfo, size: tuple[int, int]) -> YuvTarget | None:
    encoder = VideoEncoder(settings, info, size)
    try:
        return encoder.planes_target
    finally:
        encoder.close()


# Constant-quality ranges (FFmpeg's encoder documentation, doc/encoders.texi: x264 and x265 take
# 0-51, libvpx 0-63, libaom and SVT-AV1 0-63); FFmpeg's own option ranges are wider than what the
# libraries accept (x264 clamps anything above 51 without a word).
CRF_RANGE = {
    "libx264": (0, 51),
    "libx264rgb": (0, 51),
    "libx265": (0, 51),
    "libvpx-vp9": (0, 63),
    "libvpx": (0, 63),
    "libaom-av1": (0, 63),
    "libsvtav1": (0, 63),
}
# Presets by name (x264.h's x264_preset_names, which x265 shares; NVENC's AVOption constants).
_X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
_NVENC_PRESETS = ("default", "slow", "medium", "fast", "hp", "hq", "bd", "ll", "llhq", "llhp", "lossless", "losslesshp")
PRESETS = {
    "libx264": _X26X_PRESETS,
    "libx264rgb": _X26X_PRESETS,
    "libx265": _X26X_PRESETS,
    "libsvtav1": tuple(str(n) for n in range(-1, 14)),
    **{f"{c}_nvenc": (*(f"p{n}" for n in range(1, 8)), *_NVENC_PRESETS) for c in ("h264", "hevc", "av1")},
}


def check_codec(codec: str, container_format: str) -> None:
    try:
        found = av.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError):
        raise EncoderError(
            f"--codec {codec}: not an encoder this FFmpeg has; try libx264, libx265 or libsvtav1"
        ) from None
    if found.type != "video":
        raise EncoderError(f"--codec {codec}: that encoder makes {found.type}, not video; choose e.g. libx264")
    if container_format == "yuv4mpegpipe" and codec != "rawvideo":
        hint = CONTAINER_HINTS[container_format]
        raise EncoderError(f"--codec {codec}: --format yuv4mpegpipe cannot hold it; {hint}")


def check_encoder_settings(settings: EncoderSettings, info: VideoInfo | None = None) -> None:
    """Codec, container, CRF, preset and pixel format checked together, by opening the encoder
    on a small frame, before any work starts."""
    codec = settings.codec_name
    check_codec(codec, settings.container_format)
    if settings.crf is not None:
        if codec not in CRF_RANGE:
            raise EncoderError(
                f"--crf: {codec} has no CRF setting; leave --crf out, or use libx264, libx265, libvpx-vp9 or libsvtav1"
            )
        low, high = CRF_RANGE[codec]
        if not low <= settings.crf <= high:
            raise EncoderError(f"--crf {settings.crf}: {codec} takes {low} to {high} (lower is better)")
    probe = info or VideoInfo(64, 64, Fraction(1, 25), Fraction(25), None, 8, "bt709", False)
    VideoEncoder(settings, probe, (64, 64)).close()


def encoder_formats(codec: str) -> list[str]:
    try:
        return [f.name for f in av.Codec(codec, "w").video_formats or []]
    except (av.error.FFmpegError, ValueError):
        raise EncoderError(f"--codec {codec}: not an encoder this FFmpeg has") from None


def check_pix_fmt(codec: str, pix_fmt: str) -> str:
    formats = encoder_formats(codec)
    if formats and pix_fmt not in formats:
        raise EncoderError(f"--pix-fmt {pix_fmt}: {codec} cannot write it; it takes {', '.join(formats)}")
    return pix_fmt


def choose_pix_fmt(codec: str, bit_depth: int, notice: Callable[[str], None]) -> str:
    """4:2:0 at the input's depth (10-bit for deeper input) when the encoder has it."""
    formats = encoder_formats(codec)
    if not formats:  # an encoder that takes any format (rawvideo)
        return "yuv420p10le" if bit_depth > 8 else "yuv420p"
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
    return formats[0]
