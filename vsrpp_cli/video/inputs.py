"""What an input path is (a video file, a folder of frames, or a stream read once) and the
Source that reads it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from .decode import Source
from .live import LiveSource

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



def is_live(path: Path) -> bool:
    """An input that can be read only once, front to back: `-` (standard input), a FIFO, a
    device; a regular file or a folder can be read again (for segments, seeks and resumes)."""
    return str(path) == "-" or (path.exists() and not path.is_file() and not path.is_dir())



def is_one_pass(source: Path, output: Path) -> bool:
    """A run that reads or writes a stream (`-`, a FIFO, a device) goes in one pass: neither can
    be read twice or joined at the end."""
    return is_live(source) or str(output) == "-"


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
