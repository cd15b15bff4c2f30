"""Finished windows kept on disk so that an interrupted run can continue (`--resume`).

Each finished window's output frames are stored losslessly (FFV1 in Matroska, bit-exact for
8- and 16-bit RGB and for the planar YUV formats the encoder may take) in a folder beside the
output, written to a temporary name and renamed, so a window is either whole on disk or absent.
A fingerprint of the input, the weights and every setting that changes the frames guards
against resuming with something else. The folder is removed once the output is in place.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import av
import numpy as np

from .colour import Planes, YuvTarget, planar_format, read_planes, to_video_frame

FINGERPRINT = "run.json"


class ResumeError(Exception):
    """A partial run that cannot be continued as asked; the message says what to do."""


class WindowStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def open(cls, folder: Path, fingerprint: dict[str, Any], resume: bool, overwrite: bool) -> WindowStore:
        if folder.exists():
            if resume:
                saved = json.loads((folder / FINGERPRINT).read_text()) if (folder / FINGERPRINT).exists() else {}
                changed = [key for key in fingerprint if saved.get(key) != fingerprint[key]]
                if changed:
                    raise ResumeError(
                        f"the interrupted run in {folder} was made with a different {', '.join(changed)}; "
                        "run with the same input, weights and options, or use --overwrite to start over"
                    )
            elif overwrite:
                shutil.rmtree(folder)
            else:
                raise ResumeError(
                    f"an interrupted run of this output is kept in {folder}; add --resume to continue it "
                    "or --overwrite to start over"
                )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FINGERPRINT).write_text(json.dumps(fingerprint, indent=2))
        return cls(folder)

    def _path(self, index: int) -> Path:
        return self.folder / f"window_{index:06d}.mkv"

    def has(self, index: int) -> bool:
        return self._path(index).exists()

    def load(self, index: int, target: YuvTarget | None = None) -> list[np.ndarray | Planes]:
        """The window's frames, as YUV planes in the target's format when one is given (they were
        saved so: the fingerprint holds the format) or as RGB arrays."""
        with av.open(str(self._path(index))) as container:
            frames = list(container.decode(video=0))
            if target is not None:
                planes = (read_planes(frame, target.matrix, target.full_range, target.cosited) for frame in frames)
                return [dataclasses.replace(p, format=target.format) for p in planes]
            deep = frames[0].format.name.startswith("gbrp16")
            return [frame.to_ndarray(format="rgb48le" if deep else "rgb24") for frame in frames]

    def save(self, index: int, frames: list[np.ndarray | Planes]) -> None:
        partial = self.folder / f"window_{index:06d}.partial.mkv"
        first = frames[0]
        with av.open(str(partial), "w", format="matroska") as container:
            stream = container.add_stream("ffv1", rate=25)
            if isinstance(first, Planes):
                stream.height, stream.width = first.height, first.width
                stream.pix_fmt = _ffv1_format(first.format)
                pictures = (to_video_frame(planes, stream.pix_fmt) for planes in frames)
            else:
                deep = first.dtype == np.uint16
                stream.height, stream.width = first.shape[:2]
                stream.pix_fmt = "gbrp16le" if deep else "bgr0"
                pictures = (av.VideoFrame.from_ndarray(rgb, format="rgb48le" if deep else "rgb24") for rgb in frames)
            for picture in pictures:
                container.mux(stream.encode(picture))
            container.mux(stream.encode())
        partial.replace(self._path(index))

    def remove_if_empty(self) -> None:
        if not any(self.folder.glob("window_*.mkv")):
            self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _ffv1_format(pix_fmt: str) -> str:
    """FFV1 takes neither the JPEG-range formats nor the semi-planar ones: the same samples
    are stored under the plain planar name."""
    return planar_format(pix_fmt).replace("yuvj", "yuv")
