"""Folders of frames, in and out: PNG or JPEG frames read in natural order (frame2 before
frame10) as a video at --fps, and PNG frames written (16-bit for sources deeper than 8 bits)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import InputError
from .info import RGB_SOURCE_YUV, Frame, VideoInfo


def write_png(rgb: np.ndarray, path: Path) -> None:
    path.write_bytes(png_bytes(rgb))



def png_bytes(rgb: np.ndarray) -> bytes:
    """(h, w, 3) uint8 RGB, or uint16 as a 16-bit PNG, through FFmpeg's PNG encoder."""
    deep = rgb.dtype == np.uint16
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if deep else "rgb24")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="image2pipe") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height = rgb.shape[1], rgb.shape[0]
        stream.pix_fmt = "rgb48be" if deep else "rgb24"
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()



class FrameFolderSink:
    """PNG frames 00000000.png, 00000001.png, ...; 16-bit PNG for sources deeper than 8 bits."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        write_png(rgb, self.folder / f"{self.count:08d}.png")
        self.count += 1

    def close(self) -> None:
        pass


FRAME_EXTENSIONS = {".png", ".jpg", ".jpeg"}



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



def _has_alpha(path: Path) -> bool:
    """Whether an image file's pixel format carries transparency (read_image gives colour only)."""
    with av.open(str(path)) as container:
        components = av.VideoFormat(container.streams.video[0].codec_context.pix_fmt).components
    return any(component.is_alpha for component in components)


def folder_info(files: list[Path], fps: Fraction | None) -> VideoInfo:
    """A folder of frames as a video: its first frame's size and depth, at `fps` (25 unless given)."""
    first = read_image(files[0])
    h, w = first.shape[:2]
    depth = 16 if first.dtype == np.uint16 else 8
    rate = fps or Fraction(25)
    return VideoInfo(w, h, 1 / rate, rate, len(files), depth, *RGB_SOURCE_YUV, alpha=_has_alpha(files[0]))


def folder_frames(files: list[Path], info: VideoInfo, first: int = 0) -> Iterator[Frame]:
    for index, file in enumerate(files[first:], start=first):
        rgb = read_image(file)
        if rgb.shape[:2] != (info.height, info.width):
            raise InputError(
                f"{file.name} is {rgb.shape[1]}x{rgb.shape[0]}, but {files[0].name} is "
                f"{info.width}x{info.height}: every frame of a folder must be the same size"
            )
        yield Frame(index, index, rgb)
