"""What an input is (VideoInfo: size, timing, colour, as the container and its first frame
declare them) and what a source hands out (Frame)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange

from ..errors import InputError
from .colour import MATRIX_OF_TAG, Planes

# Demuxers of elementary streams, whose frames carry no times: the rate is the stream's own.
RAW_STREAMS = {"h264", "hevc", "vvc", "m4v", "mpegvideo", "cavsvideo", "vc1", "obu", "mjpeg", "dirac", "avs2", "avs3"}



# What YUV an RGB source (frames, RGB-coded video) is written as: BT.709 in limited range, the
# delivery default every player handles (full-range H.264 is shown washed out by some).
RGB_SOURCE_YUV = ("bt709", False)



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



def first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> av.VideoFrame | None:
    """The first decoded frame: FFmpeg attaches the display rotation (from the container's
    matrix) and the interlacing flags to frames, not to the stream."""
    try:
        return next(container.decode(stream), None)
    except av.error.FFmpegError:
        return None



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


def describe(
    path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream, first: av.VideoFrame | None
) -> VideoInfo:
    """The input's facts from its container, its video stream and its first decoded frame."""
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:
        raise InputError(f"{path}: the video stream has no frame size; the file may be damaged")
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


@dataclass
class Frame:
    index: int
    pts: int | None  # in info.time_base
    image: np.ndarray | Planes  # (h, w, 3) RGB uint8, or uint16 for deeper sources; or YUV planes
