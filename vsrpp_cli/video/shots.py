"""Shots: where a video cuts from one shot to the next, so that no window carries one shot's
features into the next (the BasicVSR authors advise splitting videos at cuts before their
recurrent models; docs/REFERENCE.md, "Shots").

A hard cut is a picture change that stands out from its neighbours. Each frame is seen once, as
a 16 x 16 thumbnail of its luma (a few thousand samples read, whatever the frame's size), and
frame i starts a new shot when all of these hold:
- it differs from frame i - 1 by at least MIN_CHANGE (mean absolute difference, 0 to 1);
- by RATIO times more than the frames around it change (NEIGHBOURS each side): fast motion and
  camera shake change every frame alike, a fade changes a little at each of its frames;
- it is no flash: no frame of the RETURN + 1 before i is within half that change of one of the
  RETURN + 1 from i on (the picture that comes back after a flash, into it and out of it).
It decides frame i once frame i + LOOKAHEAD is seen, so a stream's cuts are known within the
frames its windows already hold.

PySceneDetect's detectors (content, adaptive) were weighed: the same ideas on HSV at full size,
OpenCV as a dependency, and a pass of its own over the video; this one reads the frames the run
decodes anyway. Its CSV is read (`--scene-cuts FILE`), so shots cut with it are the same here.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import UsageError

T = TypeVar("T")

THUMBNAIL = 16
MIN_CHANGE = 0.08
RATIO = 2.5
NEIGHBOURS = 2
RETURN = 3
LOOKAHEAD = max(NEIGHBOURS, RETURN)


def thumbnail(image: Any) -> np.ndarray:
    """A (16, 16) float32 luma thumbnail in [0, 1] of a frame: YUV planes (their Y), an RGB
    array (h, w, 3) or a grey one, 8 or 16 bits."""
    plane = image.y if hasattr(image, "y") else np.asarray(image)
    full = 65535.0 if plane.dtype == np.uint16 else 255.0
    if plane.ndim == 3:  # RGB: BT.601 luma weights (only differences are compared)
        step = max(1, min(plane.shape[:2]) // (4 * THUMBNAIL))
        rgb = plane[::step, ::step].astype(np.float32)
        plane = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    else:
        step = max(1, min(plane.shape) // (4 * THUMBNAIL))
        plane = plane[::step, ::step].astype(np.float32)
    h, w = plane.shape
    rows = np.linspace(0, h, THUMBNAIL + 1).astype(int)
    cols = np.linspace(0, w, THUMBNAIL + 1).astype(int)
    # Block means by cumulative sums: cells of unequal size where the size does not divide.
    summed = np.pad(plane.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    area = np.maximum(np.diff(rows)[:, None] * np.diff(cols)[None, :], 1)
    blocks = summed[rows[1:]][:, cols[1:]] - summed[rows[:-1]][:, cols[1:]] - summed[rows[1:]][:, cols[:-1]]
    blocks += summed[rows[:-1]][:, cols[:-1]]
    return (blocks / area / full).astype(np.float32)


def change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


class CutDetector:
    """Frames in order in, cuts out: `see(image)` takes the next frame and returns the frames it
    has now decided start a shot (each decided LOOKAHEAD frames after it); `end()` decides the
    rest."""

    def __init__(self) -> None:
        self.thumbnails: dict[int, np.ndarray] = {}  # the frames still needed, by index
        self.changes: dict[int, float] = {}  # frame i's change from frame i - 1
        self.seen = 0
        self.decided = 1  # frame 0 starts the video, not a cut
        self.cuts: list[int] = []

    def see(self, image: Any) -> list[int]:
        index = self.seen
        self.thumbnails[index] = thumbnail(image)
        if index > 0:
            self.changes[index] = change(self.thumbnails[index], self.thumbnails[index - 1])
        self.seen += 1
        return self._decide(self.seen - 1 - LOOKAHEAD)

    def end(self) -> list[int]:
        return self._decide(self.seen - 1)

    def _decide(self, last: int) -> list[int]:
        found = []
        while self.decided <= last:
            if self._is_cut(self.decided):
                found.append(self.decided)
            self.decided += 1
        self.cuts += found
        for old in [i for i in self.thumbnails if i < self.decided - 1 - LOOKAHEAD]:
            del self.thumbnails[old]
            self.changes.pop(old, None)
        return found

    def _is_cut(self, i: int) -> bool:
        score = self.changes[i]
        if score < MIN_CHANGE:
            return False
        around = [self.changes[j] for j in range(i - NEIGHBOURS, i + NEIGHBOURS + 1) if j != i and j in self.changes]
        if around and score < RATIO * float(np.mean(around)):
            return False
        # A flash (into it, or out of it): some frame on one side looks like one on the other.
        before = [self.thumbnails[j] for j in range(i - 1 - RETURN, i) if j in self.thumbnails]
        after = [self.thumbnails[j] for j in range(i, i + 1 + RETURN) if j in self.thumbnails]
        return not any(change(b, a) < score / 2 for b in before for a in after)


def detect_cuts(images: Iterable[Any]) -> list[int]:
    """The frames that start a shot (never 0), in order."""
    detector = CutDetector()
    for image in images:
        detector.see(image)
    detector.end()
    return detector.cuts


class CutPass:
    """The cuts of a whole video found in a thread of their own, for a run that must not wait
    for them (a shared run plans its segments by shot, run/writer.py): `progress()` says up to
    which frame every cut is known and those cuts, and whether the pass has seen the last frame.
    Closing it stops the thread at its next frame; `images` is closed in the thread."""

    CLOSE_SECONDS = 5.0  # a decode stuck in the file system is left behind (a daemon thread)

    def __init__(self, images: Iterator[Any]) -> None:
        self._lock = threading.Lock()
        self._decided, self._cuts, self._done = 0, [], False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._find, args=(images,), daemon=True, name="vsrpp-cuts")
        self._thread.start()

    def _find(self, images: Iterator[Any]) -> None:
        detector = CutDetector()
        try:
            for image in images:
                if self._stop.is_set():
                    return
                found = detector.see(image)
                with self._lock:
                    self._cuts += found
                    self._decided = detector.decided  # every frame before it is decided
            found = detector.end()
            with self._lock:
                self._cuts += found
                self._decided, self._done = detector.seen, True
        except BaseException as error:  # handed to whoever asks for progress
            with self._lock:
                self._error = error
        finally:
            close = getattr(images, "close", None)
            if close is not None:
                close()

    def progress(self) -> tuple[int, list[int], bool]:
        """(frames decided, the cuts among them in order, done); the pass's error, if it failed."""
        with self._lock:
            if self._error is not None:
                raise self._error
            return self._decided, list(self._cuts), self._done

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.CLOSE_SECONDS)


def marking_cuts(items: Iterable[T], image_of: Callable[[T], Any], cuts: set[int]) -> Iterator[T]:
    """`items` passed on in order, each once every cut up to it is known (added to `cuts`):
    LOOKAHEAD items later than they arrive. What a stream's windows read."""
    detector = CutDetector()
    held: deque[T] = deque()
    for item in items:
        cuts.update(detector.see(image_of(item)))
        held.append(item)
        if len(held) > LOOKAHEAD:
            yield held.popleft()
    cuts.update(detector.end())
    yield from held


def cuts_as_read(
    items: Iterable[T], image_of: Callable[[T], Any], setting: str | list[int], frame_rate: Fraction | None
) -> tuple[Iterable[T], set[int]]:
    """For windows over a stream (a pipe, the library): the items, and the cuts each time one
    reaches the windows: found as they are read (auto), from a file or list, or none (off)."""
    if setting == "auto":
        found: set[int] = set()
        return marking_cuts(items, image_of, found), found
    if setting == "off":
        return items, set()
    return items, set(setting if isinstance(setting, list) else read_cuts(Path(setting), frame_rate))


def cuts_notice(cuts: list[int]) -> str:
    return (f"{len(cuts)} scene cut{'s' * (len(cuts) > 1)} found: each shot is upscaled on its own "
            "(--scene-cuts off runs straight through)")  # fmt: skip


# ----------------------------------------------------------------------------- cuts from a file
def read_cuts(path: Path, frame_rate: Fraction | None) -> list[int]:
    """Frames that start a shot, from a file: one frame number or timestamp per line or comma
    (`120`, `5.0s`, `00:00:05.000`), or PySceneDetect's scene list CSV (`list-scenes`: the start
    frame of each scene after the first; the timecode line above its header is skipped)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--scene-cuts {path}: cannot read it ({error}); give a file of frame numbers") from None
    rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text)) if any(map(str.strip, row))]
    if rows and rows[0][0] == "Timecode List:":  # the cuts as timecodes; the table below has frames
        rows = rows[1:]
    if rows and "Start Frame" in rows[0]:
        column = rows[0].index("Start Frame")
        try:
            starts = [int(row[column]) for row in rows[1:]]
        except (ValueError, IndexError):
            raise UsageError(f"--scene-cuts {path}: a scene list whose Start Frame column is not all frame "
                             "numbers") from None  # fmt: skip
        # PySceneDetect 0.6 on counts from 1 (its first scene starts at frame 1), 0.5 from 0.
        first = 0 if starts and starts[0] == 0 else 1
        return sorted({start - first for start in starts} - {0})
    cuts = set()
    for cell in (cell.strip() for row in rows for cell in row):
        if cell and not cell.startswith("#"):
            cuts.add(_frame_of(cell, frame_rate, path))
    return sorted(cuts - {0})


def _frame_of(cell: str, frame_rate: Fraction | None, path: Path) -> int:
    if re.fullmatch(r"\d+", cell):
        return int(cell)
    seconds = None
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)s", cell):
        seconds = float(match[1])
    elif match := re.fullmatch(r"(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", cell):
        seconds = int(match[1] or 0) * 3600 + int(match[2]) * 60 + float(match[3])
    if seconds is None:
        raise UsageError(f"--scene-cuts {path}: {cell!r} is neither a frame number (120) nor a time (5.0s, "
                         "00:00:05.000)")  # fmt: skip
    if not frame_rate:
        raise UsageError(f"--scene-cuts {path}: {cell!r} is a time, but the input has no frame rate; give frame "
                         "numbers")  # fmt: skip
    return round(seconds * frame_rate)


def find_cuts(setting: str, source: Any, total: int | None, tell: Callable[[str], None]) -> list[int]:
    """The frames that start a shot, as `--scene-cuts` asks: none (off), read from a file, or
    found in the input's frames (auto: one pass of decoding, before any window is run)."""
    if setting == "off":
        return []
    if setting != "auto":
        cuts = read_cuts(Path(setting), source.info.frame_rate)
        if total is not None and cuts and cuts[-1] >= total:
            raise UsageError(f"--scene-cuts {setting}: frame {cuts[-1]} is past the input's end ({total} frames)")
        return cuts
    cuts = detect_cuts(frame.image for frame in source.frames(keep_yuv=True))
    if cuts:
        tell(cuts_notice(cuts))
    return cuts


def check_setting(setting: str) -> None:
    """auto, off, or a file that exists (refused before any work)."""
    if setting not in ("auto", "off") and not Path(setting).is_file():
        raise UsageError(f"--scene-cuts {setting}: give auto, off, or a file of cuts (frame numbers, times, or "
                         "PySceneDetect's CSV)")  # fmt: skip
