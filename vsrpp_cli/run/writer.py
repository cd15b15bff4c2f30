"""The writer's side of a run (pipeline.py): the workers started (a thread here, or processes
through the elastic launcher), the segments they send stored in the run's folder, progress
shown, silent workers noticed."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import ExitStatus, InputError, Interrupted, UsageError, WorkerError
from .coordination import POLL, Board, Watch
from .engine import pick_device
from .failpoints import failpoint
from .folder import RunStore, remove
from .launch import Launch, check_port_free, failure_line, run_workers
from .windows import WindowTable
from .worker import InProcess, Local, describe, elastic_main

RENDEZVOUS_FILE = "rendezvous.partial"  # one machine's elastic rendezvous (a FileStore), in the run's folder
ABORT_GRACE = 5.0  # seconds a stopped run's workers have to end (they look every HEARTBEAT) before they are killed


class Writer:
    """Stores the segments the workers send, once each is checked against the plan, reports
    progress, and watches the workers."""

    def __init__(self, store: RunStore, job: dict[str, Any], done: int, total: int | None, on_progress: Callable,
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


def run_workers_here(job: dict, local: Local, writer: Writer, tell: Callable[[str], None]) -> list[dict]:
    """One process: the worker in a thread, the writer in this one."""
    board = Board.in_memory()
    board.publish_job(job)
    worker = InProcess(board, local, tell, lambda: writer.show_progress(board, 1))
    try:
        while not worker.done.wait(POLL):
            writer.poll(board, 1)
        writer.poll(board, 1)
    except BaseException:
        worker.stop.set()
        board.abort("the writer stopped")
        worker.done.wait()  # the worker stops at its next step
        raise
    if worker.error is not None:
        raise worker.error
    return board.reports(1, 1)


def run_shared(job: dict, local: Local, writer: Writer, launch: Launch) -> list[dict]:
    """Worker processes on this machine (and others), the writer in a thread of this one."""
    from torch.distributed.elastic.multiprocessing.api import SignalException

    # One machine: on loopback, at a port the store picks itself; several: on every interface
    # at the rendezvous port + 1, which every machine can work out.
    one_machine = launch.nnodes == 1
    if not one_machine:
        check_port_free(launch.port)
    board = Board.serve(0 if one_machine else launch.port + 1, launch.secret, loopback=one_machine)
    port = board.port
    board.publish_job(job)
    stop = threading.Event()
    failure: list[BaseException] = []
    before = own_children()

    def serve() -> None:
        watch = Watch(board, launch.processes)
        try:
            while not stop.is_set():
                writer.poll(board, launch.processes, watch)
                stop.wait(POLL)
        except BaseException as error:  # every worker stops; the launcher then reports this
            failure.append(error)
            board.abort(describe(error))
            kill_workers_after_grace(stop, before)

    thread = threading.Thread(target=serve, daemon=True, name="vsrpp-writer")
    thread.start()
    host = "127.0.0.1" if one_machine else launch.host
    rendezvous = writer.store.folder / RENDEZVOUS_FILE
    remove(rendezvous)  # one a killed run left
    try:
        run_workers(launch, elastic_main, host, port, os.getpid(), local, launch.secret, rendezvous_file=rendezvous)
        # The agent's return ends this machine's part, not the run: workers of other machines may
        # work on for hours (torch's exit barrier gives up on them after 300 s without a word).
        # The run ends when the writer has every segment, or a failure (which the watch sees).
        while not failure and not writer.complete() and not everyone_left(board, launch.processes):
            stop.wait(POLL)
    except SignalException as signal_:
        raise Interrupted(ExitStatus.INTERRUPTED if signal_.sigval == 2 else ExitStatus.TERMINATED) from None
    except Exception as error:
        if type(error).__name__ != "ChildFailedError":
            raise
        if failure:
            raise failure[0] from None
        why = board.error() or failure_line(error)
        raise WorkerError(f"{why}; the segments finished so far are kept: run the same command with --resume",
                          before_start=not any(board.beats(launch.processes))) from None  # fmt: skip
    finally:
        stop.set()
        thread.join()
        remove(rendezvous)
    if failure:
        raise failure[0]
    writer.poll(board, launch.processes)
    return board.reports(launch.processes, launch.max_restarts + 1)


def everyone_left(board: Board, world: int) -> bool:
    return all(board.has_left(rank, beats) for rank, beats in enumerate(board.beats(world)))


def workers_device(name: str, launch: Launch) -> torch.device:
    """The device of a shared run's workers: the CPU, or CUDA with one GPU per worker."""
    if name.startswith("cuda:"):
        raise UsageError(
            f"--device {name}: with {launch.nproc} workers each takes a GPU of its own; give --device cuda"
        )
    device = pick_device(name)
    if device.type == "cuda" and torch.cuda.device_count() < launch.nproc:
        raise UsageError(
            f"--nproc-per-node {launch.nproc}: only {torch.cuda.device_count()} CUDA device(s) here; give --device "
            "cpu to use processes"
        )
    return torch.device(device.type)


def work_for_first_machine(local: Local, launch: Launch) -> list[dict]:
    """Machines other than the first run workers only; the first writes the output. Returns
    this machine's workers' reports."""
    if not Path(local.source).exists():
        raise InputError(f"{local.source}: no such input on this machine; every machine needs it at the same path")
    ended = threading.Event()
    board = Board.connect(launch.host, launch.port + 1, launch.secret)  # here, so the thread below never waits in it
    before = own_children()

    def watch() -> None:  # the writer may stop the run while a worker here hangs
        try:
            while not ended.wait(POLL * 10):
                board.check_abort()
        except Exception:  # stopped, or the writer is gone: workers that still run are hung
            kill_workers_after_grace(ended, before)

    watcher = threading.Thread(target=watch, daemon=True, name="vsrpp-watch")
    watcher.start()
    try:
        returned = run_workers(launch, elastic_main, launch.host, launch.port + 1, os.getpid(), local, launch.secret)
    except Exception as error:
        if type(error).__name__ != "ChildFailedError":
            raise
        raise WorkerError(f"{failure_line(error)}; the first machine says why and keeps what is finished") from None
    finally:
        ended.set()
        watcher.join()  # no thread may be inside a store call when the process ends (SIGABRT)
    return [report for _, report in sorted(returned.items()) if report is not None]


def own_children() -> set[int]:
    """This process's child processes now: those started later are the run's workers."""
    return {process.pid for process in multiprocessing.active_children()}


def kill_workers_after_grace(ended: threading.Event, before: set[int]) -> None:
    """Workers told to stop end within moments; one that has not after ABORT_GRACE seconds hangs
    (a stopped process, a wedged driver) and would keep the agent waiting: SIGKILL for the worker
    processes of this run (children started after `before`: an embedding program's own stay)."""
    if not ended.wait(ABORT_GRACE):
        for process in multiprocessing.active_children():
            if process.pid not in before:
                process.kill()
