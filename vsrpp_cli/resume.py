"""The partial run: what an interrupted `upscale` leaves for `--resume`, bounded on disk.

The output is committed in closed segments as it goes. A segment is the output of a fixed
number of consecutive windows, from a fresh encoder, so it starts on a keyframe and stands
alone: the compressed packets of a video segment (with their facts in a JSON index), or a
folder of PNG frames. The windows of the segment still open are kept losslessly (FFV1 in
Matroska, bit-exact for 8- and 16-bit RGB and for the planar YUV formats the encoder takes), so
an interruption costs no network work; they are deleted when their segment closes. Disk use is
therefore the compressed output so far plus one segment's lossless windows, whatever the
video's length. At the end the segments are joined into the output without re-encoding (as
FFmpeg's concat does), and the folder is removed.

Everything is written under a temporary name and renamed, so a window or a segment is either
whole on disk or absent. `run.json` holds a fingerprint of the input, the weights and every
setting that changes the frames, which guards against resuming with something else, and the
plan (window size, segment length) that a resumed run reuses as it was.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from .colour import Planes, YuvTarget, planar_format, read_planes, to_video_frame
from .encode import FrameFolderSink, StoredPacket, VideoEncoder
from .errors import ResumeError

RUN_FILE = "run.json"
PARTIAL = ".partial"  # suffix of anything still being written


class RunStore:
    def __init__(self, folder: Path, plan: dict[str, Any]) -> None:
        self.folder = folder
        self.plan = plan

    @classmethod
    def open(
        cls, folder: Path, fingerprint: dict[str, Any], plan: dict[str, Any], resume: bool, overwrite: bool
    ) -> RunStore:
        """The run's folder: a new one, or with --resume the interrupted one (with the plan it
        was made with, which a resumed run keeps: `plan` is used only for a new run)."""
        if folder.exists() and resume:
            saved = _read_json(folder / RUN_FILE)
            changed = [key for key in fingerprint if saved.get("fingerprint", {}).get(key) != fingerprint[key]]
            if changed:
                raise ResumeError(
                    f"the interrupted run in {folder} was made with a different {', '.join(changed)}; "
                    "run with the same input, weights and options, or use --overwrite to start over"
                )
            store = cls(folder, saved["plan"])
            store.remove_partials()
            return store
        if folder.exists() and not overwrite:
            raise ResumeError(
                f"an interrupted run of this output is kept in {folder}; add --resume to continue it "
                "or --overwrite to start over"
            )
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        _write_json(folder / RUN_FILE, {"fingerprint": fingerprint, "plan": plan})
        return cls(folder, plan)

    def remove_partials(self) -> None:
        """What was being written when a run stopped, and the claims of workers (parallel.py)."""
        for path in [*self.folder.glob(f"*{PARTIAL}*"), *self.folder.glob("*.claim")]:
            remove(path)

    # --------------------------------------------------------------------- windows
    def _window(self, index: int) -> Path:
        return self.folder / f"window_{index:06d}.mkv"

    def has_window(self, index: int) -> bool:
        return self._window(index).exists()

    def stored_windows(self) -> list[int]:
        return sorted(int(p.stem.split("_")[1]) for p in self.folder.glob("window_*.mkv") if PARTIAL not in p.name)

    def load_window(self, index: int, target: YuvTarget | None = None) -> list[np.ndarray | Planes]:
        """The window's frames, as YUV planes in the target's format when one is given (they were
        saved so: the fingerprint holds the format) or as RGB arrays."""
        with av.open(str(self._window(index))) as container:
            frames = list(container.decode(video=0))
            if target is not None:
                planes = (read_planes(frame, target.matrix, target.full_range, target.cosited) for frame in frames)
                return [dataclasses.replace(p, format=target.format) for p in planes]
            deep = frames[0].format.name.startswith("gbrp16")
            return [frame.to_ndarray(format="rgb48le" if deep else "rgb24") for frame in frames]

    def save_window(self, index: int, frames: list[np.ndarray | Planes]) -> None:
        partial = self.folder / f"window_{index:06d}{PARTIAL}.mkv"
        try:
            _write_lossless(partial, frames)
        except BaseException:
            remove(partial)
            raise
        partial.replace(self._window(index))

    def drop_windows(self, indices: Iterable[int]) -> None:
        for index in indices:
            self._window(index).unlink(missing_ok=True)

    # --------------------------------------------------------------------- segments
    def segment_path(self, index: int) -> Path:
        return self.folder / f"segment_{index:06d}"

    def closed_segments(self) -> set[int]:
        """Segments whose every frame is on disk: a frames folder, or packets with their index."""
        found = set()
        for path in self.folder.glob("segment_*"):
            if PARTIAL in path.name or path.suffix == ".packets":
                continue
            found.add(int(path.name.split("_")[1].split(".")[0]))
        return found

    def video_segments(self) -> list[tuple[list[StoredPacket], Callable[[], Iterator[bytes]]]]:
        """Every closed video segment in order: its packets' facts and a reader of their bytes."""
        segments = []
        for index in sorted(self.closed_segments()):
            facts = _read_json(self.segment_path(index).with_suffix(".json"))
            packets = [StoredPacket(*entry) for entry in facts["packets"]]
            segments.append((packets, _payload_reader(self.segment_path(index).with_suffix(".packets"), packets)))
        return segments

    def frame_segments(self) -> list[Path]:
        return [self.segment_path(index) for index in sorted(self.closed_segments())]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def remove_if_empty(self) -> None:
        if not self.stored_windows() and not self.closed_segments():
            self.remove()


class VideoSegment:
    """One segment of a video output being written: a fresh encoder, its packets streamed to disk."""

    def __init__(self, store: RunStore, index: int, make_encoder: Callable[[], VideoEncoder]) -> None:
        self.final = store.segment_path(index)
        self.partial = self.final.with_name(self.final.name + PARTIAL)
        self.encoder = make_encoder()
        self.file = open(self.partial, "wb")  # noqa: SIM115 (closed in close or abort)
        self.packets: list[StoredPacket] = []

    def write(self, image: np.ndarray | Planes, pts: int | None) -> None:
        self._keep(self.encoder.encode(image, pts))

    def _keep(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            data = bytes(packet)
            self.file.write(data)
            self.packets.append(StoredPacket(int(packet.pts), int(packet.duration or 0), packet.is_keyframe, len(data)))

    def close(self) -> None:
        self._keep(self.encoder.flush())
        self.encoder.close()
        self.file.close()
        self.partial.replace(self.final.with_suffix(".packets"))
        # Last: the index's presence marks the segment closed.
        _write_json(self.final.with_suffix(".json"), {"packets": [dataclasses.astuple(p) for p in self.packets]})

    def abort(self) -> None:
        self.encoder.close()
        self.file.close()
        remove(self.partial)


class FrameSegment:
    """One segment of a frames-folder output: its PNGs in a folder, renamed whole when closed."""

    def __init__(self, store: RunStore, index: int) -> None:
        self.final = store.segment_path(index)
        self.partial = self.final.with_name(self.final.name + PARTIAL)
        remove(self.partial)
        self.sink = FrameFolderSink(self.partial)

    def write(self, image: np.ndarray, pts: int | None) -> None:
        self.sink.write(image, pts)

    def close(self) -> None:
        self.partial.replace(self.final)

    def abort(self) -> None:
        remove(self.partial)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _payload_reader(path: Path, packets: list[StoredPacket]) -> Callable[[], Iterator[bytes]]:
    def read() -> Iterator[bytes]:
        with open(path, "rb") as file:
            for packet in packets:
                yield file.read(packet.size)

    return read


def _write_lossless(path: Path, frames: list[np.ndarray | Planes]) -> None:
    first = frames[0]
    with av.open(str(path), "w", format="matroska") as container:
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


def _ffv1_format(pix_fmt: str) -> str:
    """FFV1 takes neither the JPEG-range formats nor the semi-planar ones: the same samples
    are stored under the plain planar name."""
    return planar_format(pix_fmt).replace("yuvj", "yuv")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Written under a temporary name and renamed: whole or absent."""
    partial = path.with_name(path.name + PARTIAL)
    partial.write_text(json.dumps(value, indent=2))
    partial.replace(path)
