"""The writer, the owner of a run's end: each segment a worker sends (its files in the intake,
intake.py) checked against the plan and its sender's claim, then committed to the run's folder;
progress shown; a worker's error, a silent or stalled worker stop the run (run/workers.py starts
the workers and serves it)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import WorkerError
from ..video.shots import CutPass, cuts_notice
from .coordination import Board, Watch
from .failpoints import failpoint
from .folder import RunFolder, remove
from .intake import Intake
from .windows import WindowTable


class Writer:
    """Stores the segments the workers send, once each is checked against the plan, reports
    progress, and watches the workers."""

    def __init__(self, store: RunFolder, job: dict[str, Any], done: int, total: int | None, on_progress: Callable,
                 notice: Callable[[str], None] = lambda message: None, secret: str = "",
                 cut_pass: CutPass | None = None) -> None:  # fmt: skip
        self.store, self.job, self.done, self.total, self.on_progress = store, job, done, total, on_progress
        self.notice = notice
        self.intake = Intake(store.folder, secret)  # the job out, segments in (across machines: served)
        # The cuts as far as they are known, and the segments once they all are: from the plan, or
        # found by `cut_pass` while the workers work (job["cuts_pending"]), handed on through the store.
        self.cut_pass = cut_pass
        self.cuts: list[int] = list(job["plan"].get("cuts") or [])
        self.decided = 0
        self.segments: int | None = job["segments"]
        self.table = self.layout(0)
        self.rounds_told = 0  # the workers' restarts said so far (the agent restarts them all at once)
        self.saved: set[int] = set()
        self.seconds_saving = 0.0  # checking arrived segments and committing them
        self.missing: dict[tuple[int, int, int], float] = {}  # shipped, not seen yet: since when
        self.shown = 0.0
        self.lock = threading.Lock()

    def serve_intake(self, port: int) -> None:
        """The job and segments for machines without the run's folder, at `port` (the store says it)."""
        self.intake.serve(port)

    def layout(self, overlap: int) -> WindowTable:
        """The windows of the cuts known so far (with no overlap: the frames each segment keeps,
        as its windows' context is not sent)."""
        times = self.job["times"]
        return WindowTable(self.job["plan"]["chunk_frames"], overlap, self.cuts, len(times) if times else None)

    def follow_cuts(self, board: Board) -> None:
        """The cuts the pass has found since the last look handed on to the workers; at its end,
        the segment count, and the cuts kept in the run's folder (a resume plans with them)."""
        if self.cut_pass is None or self.segments is not None:
            return
        decided, cuts, done = self.cut_pass.progress()
        found = cuts[len(self.cuts) :]
        if found:
            self.cuts += found
            self.table = self.layout(0)
        if done:
            self.store.keep_cuts(self.cuts)
            self.segments = self.table.segment_count(self.job["plan"]["windows_per_segment"])
            if self.cuts:
                self.notice(cuts_notice(self.cuts))
        if found or done or decided != self.decided:
            board.publish_cuts(found, decided, self.segments)
            self.decided = decided

    def poll(self, board: Board, world: int, watch: Watch | None = None) -> None:
        self.follow_cuts(board)
        if self.intake.refusals:
            raise WorkerError(self.intake.refusals[0])
        for segment, sender, round_ in board.shipped():
            if segment not in self.saved:
                began = time.perf_counter()
                arrived = self.take(board, segment, sender, round_)
                if arrived is None:
                    continue  # not visible here yet (a shared file system's caches): looked at again
                failpoint("save")
                frames = self.store.commit_segment(segment, arrived)
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

    def take(self, board: Board, segment: int, sender: int, round_: int) -> Path | None:
        """A shipped segment's folder in the intake, if it is one the plan holds, its sender
        claimed it in its round, and its files are what that segment must be; else the run stops,
        naming the sender (and what arrived is removed: nothing of it is stored)."""
        arrived = self.intake.arrived(segment, sender, round_)
        segments = self.segments
        if segment < 0 or (segments is not None and segment >= segments):
            why = f"that is not in the plan ({segments} segments)"
        elif segments is None and self.cut_pass is not None and not self.settled(segment):
            why = "whose shots are not known yet (the scene-cut pass has not reached them)"
        elif board.claimed_by(round_, segment) != sender:
            why = f"that it did not claim in round {round_}"
        elif arrived is None:
            # Renamed into place on another machine sharing the folder, a segment may show here
            # only once the file system's caches let it (NFS caches a name's absence for seconds).
            first_missed = self.missing.setdefault((segment, sender, round_), time.monotonic())
            if time.monotonic() - first_missed < ARRIVAL_SECONDS:
                return None
            why = f"that did not arrive in {ARRIVAL_SECONDS:.0f} s"
        else:
            why = segment_fault(arrived, self.expected_times(segment), self.job["container_format"] is None,
                                self.segment_length)  # fmt: skip
        if why is None:
            return arrived
        if arrived is not None:
            remove(arrived)
        raise WorkerError(
            f"worker {sender} sent segment {segment} {why}; the run stopped (the finished segments are kept: "
            "run the same command with --resume)"
        )

    def complete(self) -> bool:
        """Every segment of the plan is stored (a shared run knows how many there are)."""
        segments = self.segments
        return segments is not None and set(range(segments)) <= self.saved | set(self.job["committed"])

    def settled(self, segment: int) -> bool:
        """The segment's windows are laid out for good by the cuts known so far (windows.py)."""
        last = (segment + 1) * self.job["plan"]["windows_per_segment"] - 1
        return self.layout(self.job["options"]["chunk_overlap"]).settled(last, self.decided)

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


ARRIVAL_SECONDS = 60.0  # a shipped segment not in the intake after this long never will be
INDEX_BYTES = 64 << 20  # a video segment's index: hundreds of bytes a frame


def segment_fault(folder: Path, times: list[int] | None, frames_folder: bool, most: int) -> str | None:
    """What is wrong with a segment's files, or None: regular files with exactly the names its
    output kind allows, and the frame count and times of the plan (`times`; where unknown, 1 to
    `most` frames)."""
    sizes = {}
    for entry in os.scandir(folder):
        facts = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(facts.st_mode):
            return f"with {entry.name!r}, which is not a file"
        sizes[entry.name] = facts.st_size
    if frames_folder:
        count = len(sizes)
        if sorted(sizes) != [f"{index:08d}.png" for index in range(count)]:
            return f"with files named {sorted(sizes)[:3]}, not frames 00000000.png on"
        stamps = None
    else:
        if set(sizes) != {"packets", "index.json"}:
            return f"with files {sorted(sizes)[:3]}, not its packets and their index"
        if sizes["index.json"] > INDEX_BYTES:
            return f"with an index of {sizes['index.json']} bytes"
        try:
            packets = json.loads((folder / "index.json").read_bytes())["packets"]
            stamps = sorted(int(pts) for pts, _, _, _ in packets)
            total = sum(int(size) for _, _, _, size in packets)
        except (ValueError, TypeError, KeyError):
            return "with an index that is not one"
        if total != sizes["packets"]:
            return f"whose index counts {total} bytes of packets where it holds {sizes['packets']}"
        count = len(stamps)
    if times is not None and count != len(times):
        return f"with {count} frames where the plan has {len(times)}"
    if times is None and not 1 <= count <= most:
        return f"with {count} frames where a segment holds 1 to {most}"
    if times is not None and stamps is not None and stamps != sorted(times):
        return "whose frames carry other timestamps than the input's"
    return None
