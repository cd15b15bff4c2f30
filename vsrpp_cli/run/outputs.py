"""Where a run writes: the output (what --overwrite may replace), the run's folder and the
temporary file beside it, and the final move into place."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import av

from ..errors import OutputError
from ..video.encode import container_for

FRAME_NAME = re.compile(r"\d{8}\.png")  # what a frames-folder output holds


def check_output(output: Path, overwrite: bool) -> None:
    """--overwrite replaces only what vsrpp would write there: one video file, or a folder that
    holds nothing but frames in vsrpp's naming. Anything else is refused and left as it is."""
    if not output.parent.is_dir():
        raise OutputError(f"{output.parent}: no such folder for the output")
    if not output.exists() and not output.is_symlink():
        return
    if not overwrite:
        raise OutputError(f"{output} already exists; add --overwrite to replace it")
    wants_folder = container_for(output) is None
    if output.is_symlink() or output.is_dir() != wants_folder:
        kind = "a link" if output.is_symlink() else "a folder" if output.is_dir() else "a file"
        raise OutputError(f"{output} is {kind}, which --overwrite does not replace; choose another output")
    if not wants_folder and not holds_video(output):
        raise OutputError(
            f"{output} is not a video (FFmpeg finds no video stream in it), which --overwrite does not replace; "
            "choose another output"
        )
    if wants_folder:
        others = sorted(p.name for p in output.iterdir() if not (FRAME_NAME.fullmatch(p.name) and p.is_file()))
        if others:
            more = f" and {len(others) - 1} more" if len(others) > 1 else ""
            raise OutputError(
                f"{output} holds {others[0]}{more}, which vsrpp did not write; --overwrite replaces only a "
                "folder of vsrpp's frames: choose another output folder"
            )


def holds_video(path: Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video)
    except (av.error.FFmpegError, OSError):
        return False


def partial_folder(output: Path) -> Path:
    return output.with_name(f".{output.name}.vsrpp-partial")


def temporary_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.vsrpp-tmp")


def finish(temporary: Path, output: Path) -> None:
    if output.is_dir():  # only with --overwrite, and only vsrpp's frames (check_output)
        for frame in output.iterdir():
            if FRAME_NAME.fullmatch(frame.name):
                frame.unlink()
        output.rmdir()  # fails, keeping everything, if anything else appeared meanwhile
    os.replace(temporary, output)


def path_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


def join_frame_segments(segments: list[Path], folder: Path) -> None:
    """The frames of every segment, numbered on from one segment to the next, into `folder`, as
    links (copies where links fail): the segments stay whole until the output is in place, so an
    interruption here loses nothing."""
    count = 0
    for segment in segments:
        for frame in sorted(segment.iterdir()):
            target = folder / f"{count:08d}{frame.suffix}"
            try:
                os.link(frame, target)
            except OSError:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
                shutil.copyfile(frame, target)
            count += 1
