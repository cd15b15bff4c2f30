"""Finished windows kept on disk so that an interrupted run can continue (`--resume`).

Each finished window's output frames are stored losslessly (FFV1 in Matroska, bit-exact for
8- and 16-bit RGB) in a folder beside the output, written to a temporary name and renamed, so a
window is either whole on disk or absent. A fingerprint of the input, the weights and every
setting that changes the frames guards against resuming with something else. The folder is
removed once the output is in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import av
import numpy as np

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

    def load(self, index: int) -> list[np.ndarray]:
        with av.open(str(self._path(index))) as container:
            frames = list(container.decode(video=0))
            deep = frames[0].format.name.startswith("gbrp16")
            return [frame.to_ndarray(format="rgb48le" if deep else "rgb24") for frame in frames]

    def save(self, index: int, frames: list[np.ndarray]) -> None:
        partial = self.folder / f"window_{index:06d}.partial.mkv"
        deep = frames[0].dtype == np.uint16
        with av.open(str(partial), "w", format="matroska") as container:
            stream = container.add_stream("ffv1", rate=25)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "gbrp16le" if deep else "bgr0"
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if deep else "rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        partial.replace(self._path(index))

    def remove_if_empty(self) -> None:
        if not any(self.folder.glob("window_*.mkv")):
            self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
