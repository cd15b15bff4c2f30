"""A worker of `vsrpp upscale`: it claims whole segments, decodes each one's frames with their
context, runs its windows through the network, encodes it with a fresh encoder and sends it to
the writer; then the next, until none is left.

One process runs one worker in a thread of its own; `--nproc-per-node`/`--nnodes` run one per
process (one per GPU), started by the elastic launcher. It is the same code either way: only the
store behind coordination.Board differs.

Decoding runs in one thread, encoding in another, the network in the worker's: they overlap,
and no stage holds more than a window (chunk + 2 * overlap frames) plus two short queues, so
memory does not grow with the video (a segment is encoded into files as it comes: intake.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import resource
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError, WorkerError
from ..network import BasicVSRPlusPlus
from ..video.colour import YuvTarget
from ..video.decode import Source
from ..video.encode import EncoderSettings
from ..video.info import Frame
from ..video.inputs import open_source
from ..weights.hashing import sample_sha256, sha256_of
from .coordination import POLL, AbortError, Board
from .engine import build_engine, worker_device
from .failpoints import failpoint
from .folder import PARTIAL, Spool, remove
from .intake import INCOMING, arrival_name, deliver, fetch_job, sees_folder
from .options import Options
from .reading import FrameReader
from .segments import SegmentWriter, SpoolWriter, segment_maker, spool_folder
from .windows import Window, WindowTable, batches, windows_as_read

PASS_SECONDS = 600.0  # a worker waits this long for the writer's scene-cut pass to move on


# ----------------------------------------------------------------------------- the worker
class Worker:
    def __init__(
        self,
        board: Board,
        local: Local,
        rank: int,
        world: int,
        round_: int,
        stop: threading.Event | None = None,
        notice: Callable[[str], None] | None = None,
        moved: Callable[[], None] = lambda: None,
        model: BasicVSRPlusPlus | None = None,  # the run's checkpoint, loaded already in this process
    ) -> None:
        self.board, self.rank, self.world, self.round = board, rank, world, round_
        self.stop = stop or threading.Event()
        self.job = job = fetch_job(board, Path(local.spool))
        self.options = options = Options.from_job(job["options"])
        self.notices: list[str] = []
        self.notice, self.moved = notice, moved  # moved: its progress changed (the writer shows it)
        self.segment_frames = 0  # of the open segment, done so far
        self.source = open_source(Path(local.source), options.deinterlace, self.tell, options.fps)
        check_same_input(self.source, local, job)
        self.info = self.source.info
        self.device = worker_device(local.device, world)
        plan = job["plan"]
        self.chunk, self.per_segment = plan["chunk_frames"], plan["windows_per_segment"]
        self.overlap = options.chunk_overlap
        self.table = WindowTable(self.chunk, self.overlap, plan.get("cuts") or [], job["total"])
        self.segments: int | None = job["segments"]  # None: not known yet (or, in one process, at all)
        # A shared run's cuts may still be being found (by the writer: settle() follows them); in
        # one process the worker finds them in the frames it reads anyway.
        self.pending_cuts = bool(job.get("cuts_pending"))
        self.found_cuts: set[int] | None = set() if plan.get("cuts", []) is None and not self.pending_cuts else None
        self.as_read: Iterator[Window[Frame]] | None = None  # the windows, laid out as frames come
        self.held: Window[Frame] | None = None  # read past the segment asked for: the next one's
        tile = plan.get("tile", options.tile)  # the writer's choice, the same for every worker
        self.engine = build_engine(options, Path(local.weights), self.info, self.device, tile,
                                   self.chunk + 2 * self.overlap, self.tell, model=model)  # fmt: skip
        self.target = YuvTarget(**job["target"]) if job["target"] else None
        settings = EncoderSettings(job["container_format"], options.codec, options.crf, options.preset, options.pix_fmt)
        self.new_segment = segment_maker(settings, self.info, tuple(job["size"]))
        # This run's folder itself (its marker for this launch), not a folder of the same path.
        self.sees_folder = sees_folder(Path(local.spool), job["intake"]["token"])
        self.own_spool = not self.sees_folder
        self.spool = Spool(spool_folder(job["run_id"], rank) if self.own_spool else Path(local.spool))
        self.reader = FrameReader(self.source, options.colour == "device", job["times"], 2 * self.overlap)
        # (its thread started last: nothing after it can fail)
        self.spooling = SpoolWriter(self.spool, partial(self.failpoint, "spool"))
        self.stats: dict[str, Any] = {
            "rank": rank, "device": str(self.device), "batch": self.engine.batch, "segments": 0, "windows": 0,
            "windows_resumed": 0, "frames": 0, "seconds": 0.0, "seconds_sending": 0.0, "bytes_sent": 0,
        }  # fmt: skip

    def failpoint(self, name: str) -> None:
        failpoint(name, self.rank, self.forge)

    def forge(self) -> None:
        """Announces a segment this worker did not claim (failpoint action forge): the last of
        the plan, or one past it where the last is its own."""
        segments = self.segments or 1  # (while the cuts are found: one past the first, which may be in no plan)
        last = segments - 1
        forged = segments if self.board.claimed_by(self.round, last) == self.rank else last
        self.board.ship(forged, self.rank, self.round)

    def tell(self, message: str) -> None:
        """Said at once in one process; a worker process's notices come with its report."""
        if self.notice is not None:
            self.notice(message)
        elif message not in self.notices:
            self.notices.append(message)

    def run(self) -> dict[str, Any]:
        """Every segment this worker claims; what it did (also reported through the store)."""
        began = time.perf_counter()
        try:
            for segment in self.claims():
                if not self.run_segment(segment):
                    break
                self.stats["segments"] += 1
        finally:
            self.reader.close()  # the decode thread ends and the input is closed, now (not at exit)
            self.spooling.close()
        if self.own_spool and not self.spool.stored_windows():
            shutil.rmtree(self.spool.folder, ignore_errors=True)
        self.stats.update(
            seconds=round(time.perf_counter() - began, 3),
            seconds_sending=round(self.stats["seconds_sending"], 4),
            seconds_spool_wait=round(self.spooling.seconds_waiting, 4),
            peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            fp32_fallbacks=self.engine.fp32_fallbacks,
            tile=self.engine.tile,
            lost=self.source.report.lost,
            cuts=sorted(self.found_cuts) if self.found_cuts is not None else None,
            notices=self.notices,
        )
        self.board.report(self.rank, self.round, self.stats)
        return self.stats

    def claims(self) -> Iterator[int]:
        """Segments not committed, in order, each taken by the first worker to ask for it (once
        its shots are known, where the writer is still finding them)."""
        committed = set(self.job["committed"])
        for segment in itertools.count():
            if self.segments is not None and segment >= self.segments:
                return
            if segment in committed or self.board.is_saved(segment):
                continue
            if self.pending_cuts and not self.settle(segment):
                return
            if self.board.claim(self.round, segment, self.rank):
                yield segment

    def settle(self, segment: int) -> bool:
        """Waits until the writer's pass has found the cuts that lay out the segment's windows
        (windows.WindowTable.settled), or all of them; False where the video ends before it. The
        pass reads far faster than the network runs, so this waits at the start if at all."""
        last = (segment + 1) * self.per_segment - 1
        deadline, known = time.monotonic() + PASS_SECONDS, -1
        while True:
            decided, cuts, segments = self.board.cuts()
            if len(cuts) != len(self.table.cuts):
                self.table = WindowTable(self.chunk, self.overlap, cuts, self.job["total"])
            if segments is not None:
                self.segments, self.pending_cuts = segments, False
                return segment < segments
            if self.table.settled(last, decided):
                return True
            if decided != known:
                deadline, known = time.monotonic() + PASS_SECONDS, decided
            elif time.monotonic() > deadline:
                raise WorkerError(f"the writer's scene-cut pass has not moved past frame {decided} in "
                                  f"{PASS_SECONDS:.0f} s; is the first machine's input stalled?")  # fmt: skip
            if self.stop.is_set():
                raise AbortError("stopped")
            self.board.check_abort()
            time.sleep(POLL)

    def run_segment(self, segment: int) -> bool:
        """Encode and send one segment; False when it holds no frame (past the input's end)."""
        first = segment * self.per_segment
        indices = range(first, first + self.per_segment)
        built = self.building(segment)
        try:
            if not self.encode_segment(indices, built):
                return False
            self.spooling.flush()  # its windows on disk, or their error now (none written after the drop)
            self.failpoint("encode")
            began = time.perf_counter()
            size = sum(path.stat().st_size for path in built.iterdir())
            deliver(built, segment, self.rank, self.round, self.job["intake"], self.board.host, self.board.secret,
                    self.sees_folder, partial(self.failpoint, "stream"))  # fmt: skip
        finally:
            remove(built)  # (delivered: gone from here already)
        self.board.ship(segment, self.rank, self.round)
        self.failpoint("send")
        self.board.wait_saved(segment)
        self.stats["seconds_sending"] += time.perf_counter() - began  # until the writer has it on disk
        self.stats["bytes_sent"] += size
        self.board.set_within(self.rank, 0)
        self.spool.drop_windows(indices)
        self.stats["frames"] += self.segment_frames
        return True

    def building(self, segment: int) -> Path:
        """An empty folder for the segment's files: in the run's intake where this machine sees
        it (delivered by a rename), else in the worker's own spool (streamed from there)."""
        name = arrival_name(segment, self.rank, self.round) + PARTIAL
        folder = self.spool.folder / INCOMING / name if self.sees_folder else self.spool.folder / name
        remove(folder)
        folder.mkdir()
        return folder

    def encode_segment(self, indices: range, folder: Path) -> int:
        """The segment's windows upscaled and encoded into `folder`: its frame count."""
        writer = SegmentWriter(lambda: self.new_segment(folder), folder)
        try:
            self.segment_frames = 0
            for window, upscaled in self.upscaled_windows(indices):
                for frame, image in zip(window.items[window.keep], upscaled, strict=True):
                    writer.put(image, frame.pts)
                self.segment_frames += window.keep.stop - window.keep.start
                self.board.set_within(self.rank, self.segment_frames)
                self.moved()
            if self.segment_frames:
                writer.finish()
        finally:
            writer.abort()
        return self.segment_frames

    def upscaled_windows(self, indices: range) -> Iterator[tuple[Window[Frame], list]]:
        """The segment's windows with their upscaled kept frames, in order: from the spool where
        an earlier run stored them, else through the network, up to `batch` windows at once."""
        stored = self.spool.has_window
        for batch in batches(self.windows(indices), self.engine.batch, lambda window: stored(window.index)):
            if self.stop.is_set():
                raise AbortError("stopped")
            if stored(batch[0].index):
                self.stats["windows_resumed"] += 1
                yield batch[0], self.spool.load_window(batch[0].index, self.target)
                continue
            for window, upscaled in zip(batch, self.engine.upscale_windows(batch, self.info.bit_depth, self.target,
                                                                           self.within), strict=True):  # fmt: skip
                self.failpoint("network")
                if window.index != indices[-1]:  # the segment's last window is sent at once: nothing to keep
                    self.spooling.save(window.index, upscaled)
                self.stats["windows"] += 1
                yield window, upscaled

    def within(self, frames: float) -> None:
        """Progress inside a forward (the writer shows it); a stopped run stops here."""
        if self.stop.is_set():
            raise AbortError("stopped")
        self.board.set_within(self.rank, self.segment_frames + frames)
        self.moved()

    def windows(self, indices: range) -> Iterator[Window[Frame]]:
        """The plan's windows (windows.WindowTable: as a run over the whole video lays them out,
        shot by shot), read lazily, one window at a time; the video may end sooner than known."""
        if self.found_cuts is not None:
            yield from self.windows_as_read(indices)
            return
        for index in indices:
            span = self.table.span(index)
            if span is None:
                return
            items = list(self.reader.read(span.start, span.stop))
            self.failpoint("decode")
            keep_stop = min(span.keep_stop, span.start + len(items))
            if keep_stop <= span.keep_start:
                return
            yield Window(index, span.start, items, slice(span.keep_start - span.start, keep_stop - span.start))


    def windows_as_read(self, indices: range) -> Iterator[Window[Frame]]:
        """The same windows in one process where the cuts are not planned: found in the frames
        as they are read, from the first on (a resumed run reads past what it has, as it would
        anyway, and finds the same cuts), 3 frames ahead of the windows (shots.LOOKAHEAD)."""
        if self.as_read is None:
            self.as_read, self.found_cuts = windows_as_read(self.reader.read(0, sys.maxsize), self.chunk,
                                                            self.overlap, "auto", None)  # fmt: skip
        while True:
            window, self.held = self.held or next(self.as_read, None), None
            if window is None or window.index >= indices.stop:
                self.held = window
                return
            if window.index >= indices.start:
                self.failpoint("decode")
                yield window


def check_same_input(source: Source, local: Local, job: dict[str, Any]) -> None:
    """Every machine must read the same input and weights as the writer's."""
    fingerprint = job["fingerprint"]
    size = source.path.stat().st_size if source.path.is_file() else len(source.files)
    if size != fingerprint["input_size"]:
        raise InputError(
            f"{source.path} here is not the input of the run ({size} bytes against {fingerprint['input_size']} on "
            "the first machine); give every machine the same file"
        )
    if sample_sha256(source.path, source.files or None) != fingerprint["input_sample"]:
        raise InputError(
            f"{source.path} here is not the input of the run (the same size as the first machine's, other bytes); "
            "give every machine the same file"
        )
    if sha256_of(Path(local.weights)) != fingerprint["weights_sha256"]:
        raise UsageError(f"{local.weights} here differs from the first machine's weights; give every machine the same")


__all__ = ["Local", "Worker"]


@dataclasses.dataclass
class Local:
    """What a worker takes from its own machine's command rather than from the job: files are
    at their paths on this machine, and the device and threads are this machine's."""

    source: str
    weights: str
    spool: str  # the run's folder, used where this machine has it (else a folder of its own)
    device: str  # "auto", "cpu", "cuda", "cuda:N"
    threads: int  # torch threads: this process's share of the machine's cores, or OMP_NUM_THREADS
