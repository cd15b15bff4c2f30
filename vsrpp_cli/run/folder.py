"""The run's folder: what an interrupted `upscale` leaves for `--resume`, bounded on disk.

The output is made of segments, the unit of work: the output frames of a fixed number of
consecutive windows, from a fresh encoder, so each starts on a keyframe and stands alone. A
worker encodes a segment into files (compressed packets and their index, or PNG frames) that
reach the writer in `incoming/` (intake.py); the writer checks them and commits them here, flushed
to disk (fsync) before the rename that marks them committed. The windows of a segment still being
worked are kept losslessly in the worker's spool (FFV1 in Matroska, bit-exact for 8- and 16-bit
RGB and for the planar YUV formats the encoder takes), so an interruption costs at most a window
or two of network work; they go when their segment is committed. At the end the segments are
joined into the output without re-encoding (as FFmpeg's concat does), and the folder is removed.

`run.json` holds a fingerprint of the input, the weights and every setting that changes the
frames, which guards against resuming with something else, and the plan (window size, segment
length) that a resumed run reuses as it was. `run.lock` is held (flock) by the writer while the
run is live, so a second run on the same output is refused rather than racing the first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import OutputError, ResumeError
from ..video.colour import Planes, YuvTarget, planar_format, read_planes, to_video_frame
from ..video.mux import Muxer, StoredPacket
from .outputs import partial_folder

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
PARTIAL = ".partial"  # suffix of anything still being written


class RunFolder:
    def __init__(self, folder: Path, plan: dict[str, Any], fingerprint: dict[str, Any] | None = None) -> None:
        self.folder = folder
        self.plan = plan
        self.fingerprint = fingerprint or {}
        self.lock: int | None = None

    @classmethod
    def open(
        cls, folder: Path, fingerprint: dict[str, Any], plan: Callable[[], dict[str, Any]], resume: bool,
        overwrite: bool,
    ) -> RunFolder:  # fmt: skip
        """The run's folder: a new one, or with --resume the interrupted one (with the plan it
        was made with, which a resumed run keeps: `plan()` is made only for a new run, once the
        lock is held). Locked for this run either way."""
        if folder.exists():
            held = lock_folder(folder)  # before anything is read or removed: a live run keeps its folder
        if folder.exists() and resume:
            saved = _read_json(folder / RUN_FILE)
            changed = [key for key in fingerprint if saved.get("fingerprint", {}).get(key) != fingerprint[key]]
            if not saved or changed:
                os.close(held)
                raise ResumeError(
                    f"the interrupted run in {folder} was made with a different {', '.join(changed) or 'plan'}; "
                    "run with the same input, weights and options, or use --overwrite to start over"
                )
            store = cls(folder, saved["plan"], fingerprint)
            store.lock = held
            store.remove_partials()
            return store
        if folder.exists() and not overwrite:
            os.close(held)
            raise ResumeError(
                f"an interrupted run of this output is kept in {folder}; add --resume to continue it "
                "or --overwrite to start over"
            )
        if folder.exists():
            os.close(held)  # (another run may take the lock between here and the new folder: it then finds that)
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        store = cls(folder, {}, fingerprint)
        store.lock = lock_folder(folder)
        try:
            store.plan = plan()
        except BaseException:  # (cannot plan: the cuts file is refused) nothing of this run is left
            store.remove()
            raise
        _write_json(folder / RUN_FILE, {"fingerprint": fingerprint, "plan": store.plan})
        return store

    def keep_cuts(self, cuts: list[int]) -> None:
        """The cuts a shared run found while it worked, into its plan: a resume plans with them
        (the same as it would find again: the pass is a function of the frames)."""
        self.plan = {**self.plan, "cuts": list(cuts)}
        _write_json(self.folder / RUN_FILE, {"fingerprint": self.fingerprint, "plan": self.plan})

    def remove_partials(self) -> None:
        """What was being written when a run stopped."""
        for path in self.folder.glob(f"*{PARTIAL}*"):
            remove(path)

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

    def commit_segment(self, index: int, arrived: Path) -> int:
        """A segment as it arrived in the intake (checked by the writer), durable before it counts
        as committed: a video's packets then their index (whose presence marks the segment
        closed), or a folder of PNG frames renamed whole. Returns its frame count."""
        final = self.segment_path(index)
        if (arrived / "index.json").exists():
            count = len(json.loads((arrived / "index.json").read_bytes())["packets"])
            for name, suffix in (("packets", ".packets"), ("index.json", ".json")):
                sync(arrived / name)
                (arrived / name).replace(final.with_suffix(suffix))
                sync(self.folder)
            arrived.rmdir()
            return count
        frames = list(arrived.iterdir())
        for path in frames:
            sync(path)
        sync(arrived)
        remove(final)  # (none: a committed segment is never sent again)
        arrived.replace(final)
        sync(self.folder)
        return len(frames)

    def segment_frame_count(self, index: int) -> int:
        path = self.segment_path(index)
        if path.is_dir():
            return sum(1 for _ in path.iterdir())
        return len(_read_json(path.with_suffix(".json")).get("packets", []))

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

    def unlock(self) -> None:
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None

    def remove(self) -> None:
        self.unlock()
        shutil.rmtree(self.folder, ignore_errors=True)

    def remove_if_empty(self) -> None:
        if not Spool(self.folder).stored_windows() and not self.closed_segments():
            self.remove()


def clean_up(
    muxer: Muxer | None, temporary: Path | None, folder: RunFolder | None, notice: Callable[[str], None]
) -> None:
    """After a failure or an interruption: what is partial goes, closed segments and stored
    windows stay for --resume (and the folder goes too when it holds nothing). Never raises over
    the failure it follows: what it could not remove is said in one line."""
    steps: list[tuple[str, Callable[[], None]]] = []
    if temporary is not None:
        steps.append(("the temporary output", lambda: remove(temporary)))
    if muxer is not None:
        steps.insert(0, ("the output being joined", muxer.abort))
    if folder is not None:
        steps += [("unfinished files", folder.remove_partials), ("the run's folder", folder.remove_if_empty),
                  ("the run's lock", folder.unlock)]  # fmt: skip
    left = []
    for what, step in steps:
        try:
            step()
        except Exception as error:
            left.append(f"{what} ({os.strerror(error.errno) if isinstance(error, OSError) else error})")
    if left:
        notice(f"could not remove {', '.join(left)}")


def lock_folder(folder: Path) -> int:
    """An exclusive flock on the folder's lock file, held until closed (or the process dies)."""
    descriptor = os.open(folder / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        output = folder.name.removeprefix(".").removesuffix(".vsrpp-partial")
        raise OutputError(
            f"another vsrpp run is writing {output} now (it holds {folder / LOCK_FILE}); wait for it to end or "
            "stop it, then run again"
        ) from None
    return descriptor


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """One live run per output for a run that keeps no folder (a one-pass run into a file): the
    run's folder, made for its lock where there is none, removed after if it holds only that (an
    interrupted run's folder stays for its --resume)."""
    folder = partial_folder(output)
    folder.mkdir(exist_ok=True)
    descriptor = lock_folder(folder)
    try:
        yield
    finally:
        os.close(descriptor)
        with contextlib.suppress(OSError):  # never raised over the run's own outcome
            if {path.name for path in folder.iterdir()} <= {LOCK_FILE}:
                shutil.rmtree(folder, ignore_errors=True)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def durable_write(path: Path, data: bytes, rename: bool = True) -> None:
    """The bytes on disk (fsync) under `path`, whole or absent: written under a temporary name
    and renamed, the folder synced so that the rename survives a power cut too."""
    partial = path.with_name(path.name + PARTIAL) if rename else path
    with open(partial, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    if rename:
        partial.replace(path)
        sync(path.parent)


def sync(path: Path) -> None:
    """A file's or a folder's changes on disk, whoever made them (fsync covers them all)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    durable_write(path, json.dumps(value, indent=2).encode())


class Spool:
    """A worker's lossless windows of the segment it works on (the run's folder itself on the
    writer's machine, a folder of its own elsewhere)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

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
            with open(partial, "rb") as file:
                os.fsync(file.fileno())
        except BaseException:
            remove(partial)
            raise
        partial.replace(self._window(index))

    def drop_windows(self, indices: Iterable[int]) -> None:
        for index in indices:
            self._window(index).unlink(missing_ok=True)



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
