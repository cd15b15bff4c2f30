"""The writer, the owner of a run's end: each segment a worker sends checked against the plan
and its sender's claim, then stored in the run's folder; progress shown; a worker's error, a
silent or stalled worker stop the run (run/workers.py starts the workers and serves it)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import WorkerError
from .coordination import Board, Watch
from .failpoints import failpoint
from .folder import RunFolder
from .windows import WindowTable


class Writer:
    """Stores the segments the workers send, once each is checked against the plan, reports
    progress, and watches the workers."""

    def __init__(self, store: RunFolder, job: dict[str, Any], done: int, total: int | None, on_progress: Callable,
                 notice: Callable[[str], None] = lambda message: None) -> None:  # fmt: skip
        self.store, self.job, self.done, self.total, self.on_progress = store, job, done, total, on_progress
        self.notice = notice
        # The frames each segment keeps (its windows' context, which the overlap sizes, is not sent).
        plan, times = job["plan"], job["times"]
        self.table = WindowTable(plan["chunk_frames"], 0, plan.get("cuts") or [], len(times) if times else None)
        self.rounds_told = 0  # the workers' restarts said so far (the agent restarts them all at once)
        self.saved: set[int] = set()
        self.seconds_saving = 0.0  # taking sent segments from the store and committing them
        self.shown = 0.0
        self.lock = threading.Lock()

    def poll(self, board: Board, world: int, watch: Watch | None = None) -> None:
        for segment, sender, round_ in board.shipped():
            if segment not in self.saved:
                began = time.perf_counter()
                files = self.take(board, segment, sender, round_)
                failpoint("save")
                frames = self.store.save_segment(segment, files)  # (its index, not read back from disk)
                self.seconds_saving += time.perf_counter() - began
                board.mark_saved(segment)
                self.saved.add(segment)
                self.done += frames
        if watch is not None:
            failed = board.error()  # a worker's own cause, told at once (never as its later silence)
            if failed is not None:
                raise WorkerError(f"{failed}; the segments finished so far are kept: run the same command with "
                                  "--resume")  # fmt: skip
            if watch.check():  # restarts are read at the watch's pace, not at every poll
                self.tell_restarts(board, world)
        self.show_progress(board, world)

    def tell_restarts(self, board: Board, world: int) -> None:
        for rank, round_ in enumerate(board.rounds(world)):
            if round_ > self.rounds_told:
                self.rounds_told = round_
                self.notice(f"worker {rank} stopped and was started again (restart {round_} of --max-restarts)")

    def take(self, board: Board, segment: int, sender: int, round_: int) -> dict[str, bytes]:
        """A sent segment's files, if it is one the plan holds, its sender claimed it in its round,
        and its files are what that segment must be; else the run stops, naming the sender."""
        why = None
        segments = self.job["segments"]
        if segment < 0 or (segments is not None and segment >= segments):
            why = f"that is not in the plan ({segments} segments)"
        elif board.claimed_by(round_, segment) != sender:
            why = f"that it did not claim in round {round_}"
        else:
            try:
                files = board.take(segment)
            except ValueError as error:
                why = f"in a form no worker sends ({error})"
            else:
                why = segment_fault(files, self.expected_times(segment), self.job["container_format"] is None,
                                    self.segment_length)  # fmt: skip
        if why is not None:
            raise WorkerError(
                f"worker {sender} sent segment {segment} {why}; the run stopped (the finished segments are kept: "
                "run the same command with --resume)"
            )
        return files

    def complete(self) -> bool:
        """Every segment of the plan is stored (a shared run knows how many there are)."""
        segments = self.job["segments"]
        return segments is not None and set(range(segments)) <= self.saved | set(self.job["committed"])

    def expected_times(self, segment: int) -> list[int] | None:
        """The input's frame times that the segment's frames carry (a shared run knows them all)."""
        times, per = self.job["times"], self.job["plan"]["windows_per_segment"]
        if times is None:
            return None
        return [times[i] for i in self.table.frames_of(range(segment * per, (segment + 1) * per))]

    @property
    def segment_length(self) -> int:
        """Frames in a segment (the last one may hold fewer)."""
        return self.job["plan"]["chunk_frames"] * self.job["plan"]["windows_per_segment"]

    def show_progress(self, board: Board, world: int) -> None:
        """From the writer's polls, and from the in-process worker at every propagation step."""
        with self.lock:
            # A saved segment counts here before its worker clears its own count: never backwards.
            progress = min(self.done + board.within(world), self.total or float("inf"))
            if progress > self.shown:
                self.shown = progress
                self.on_progress(progress, self.total)


def segment_fault(files: dict[str, bytes], times: list[int] | None, frames_folder: bool, most: int) -> str | None:
    """What is wrong with a segment's files, or None: exactly the names its output kind allows,
    and the frame count and times of the plan (`times`; where unknown, 1 to `most` frames)."""
    if frames_folder:
        count = len(files)
        if list(files) != [f"{index:08d}.png" for index in range(count)]:
            return f"with files named {sorted(files)[:3]}, not frames 00000000.png on"
        stamps = None
    else:
        if set(files) != {"packets", "index.json"}:
            return f"with files {sorted(files)[:3]}, not its packets and their index"
        try:
            packets = json.loads(files["index.json"])["packets"]
            stamps = sorted(int(pts) for pts, _, _, _ in packets)
            sizes = sum(int(size) for _, _, _, size in packets)
        except (ValueError, TypeError, KeyError):
            return "with an index that is not one"
        if sizes != len(files["packets"]):
            return f"whose index counts {sizes} bytes of packets where it holds {len(files['packets'])}"
        count = len(stamps)
    if times is not None and count != len(times):
        return f"with {count} frames where the plan has {len(times)}"
    if times is None and not 1 <= count <= most:
        return f"with {count} frames where a segment holds 1 to {most}"
    if times is not None and stamps is not None and stamps != sorted(times):
        return "whose frames carry other timestamps than the input's"
    return None


