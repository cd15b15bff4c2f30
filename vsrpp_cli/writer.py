"""The writer's side of a run (pipeline.py): the workers started (a thread here, or processes
through the elastic launcher), the segments they send stored in the run's folder, progress
shown, silent workers noticed."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .coordination import POLL, Board, Watch
from .engine import pick_device
from .errors import ExitStatus, InputError, Interrupted, UsageError, WorkerError
from .failpoints import failpoint
from .launch import Launch, failure_line, run_workers
from .resume import RunStore
from .worker import InProcess, Local, describe, elastic_main

ABORT_GRACE = 5.0  # seconds a stopped run's workers have to end (they look every HEARTBEAT) before they are killed


class Writer:
    """Stores the segments the workers send, reports progress, and watches the workers."""

    def __init__(self, store: RunStore, done: int, total: int | None, on_progress: Callable) -> None:
        self.store, self.done, self.total, self.on_progress = store, done, total, on_progress
        self.saved: set[int] = set()
        self.seconds_saving = 0.0  # taking sent segments from the store and committing them
        self.shown = 0.0
        self.lock = threading.Lock()

    def poll(self, board: Board, world: int, watch: Watch | None = None) -> None:
        for segment in board.shipped():
            if segment not in self.saved:
                began = time.perf_counter()
                files = board.take(segment)
                failpoint("save")
                frames = self.store.save_segment(segment, files)  # (its index, not read back from disk)
                self.seconds_saving += time.perf_counter() - began
                board.mark_saved(segment)
                self.saved.add(segment)
                self.done += frames
        if watch is not None:
            watch.check()
        self.show_progress(board, world)

    def show_progress(self, board: Board, world: int) -> None:
        """From the writer's polls, and from the in-process worker at every propagation step."""
        with self.lock:
            # A saved segment counts here before its worker clears its own count: never backwards.
            progress = min(self.done + board.within(world), self.total or float("inf"))
            if progress > self.shown:
                self.shown = progress
                self.on_progress(progress, self.total)


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

    # One machine: a port the store picks itself (a second free_port() could return the
    # rendezvous's own); several: the rendezvous port + 1, which every machine can work out.
    board = Board.serve(launch.port + 1 if launch.nnodes > 1 else 0)
    port = board.store.port
    board.publish_job(job)
    stop = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        watch = Watch(board, launch.processes)
        try:
            while not stop.is_set():
                writer.poll(board, launch.processes, watch)
                stop.wait(POLL)
        except BaseException as error:  # every worker stops; the launcher then reports this
            failure.append(error)
            board.abort(describe(error))
            kill_workers_after_grace(stop)

    thread = threading.Thread(target=serve, daemon=True, name="vsrpp-writer")
    thread.start()
    host = launch.host if launch.nnodes > 1 else "127.0.0.1"
    try:
        run_workers(launch, elastic_main, host, port, os.getpid(), local)
    except SignalException as signal_:
        raise Interrupted(ExitStatus.INTERRUPTED if signal_.sigval == 2 else ExitStatus.TERMINATED) from None
    except Exception as error:
        if type(error).__name__ != "ChildFailedError":
            raise
        if failure:
            raise failure[0] from None
        why = board.error() or failure_line(error)
        raise WorkerError(f"{why}; the segments finished so far are kept: run the same command with --resume") from None
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]
    writer.poll(board, launch.processes)
    return board.reports(launch.processes, launch.max_restarts + 1)


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


def work_for_first_machine(local: Local, launch: Launch) -> None:
    """Machines other than the first run workers only; the first writes the output."""
    if not Path(local.source).exists():
        raise InputError(f"{local.source}: no such input on this machine; every machine needs it at the same path")
    ended = threading.Event()

    def watch() -> None:  # the writer may stop the run while a worker here hangs
        try:
            board = Board.connect(launch.host, launch.port + 1)
            while not ended.wait(POLL * 10):
                board.check_abort()
        except Exception:  # stopped, or the writer is gone: workers that still run are hung
            kill_workers_after_grace(ended)

    threading.Thread(target=watch, daemon=True, name="vsrpp-watch").start()
    try:
        run_workers(launch, elastic_main, launch.host, launch.port + 1, os.getpid(), local)
    except Exception as error:
        if type(error).__name__ != "ChildFailedError":
            raise
        raise WorkerError(f"{failure_line(error)}; the first machine says why and keeps what is finished") from None
    finally:
        ended.set()


def kill_workers_after_grace(ended: threading.Event) -> None:
    """Workers told to stop end within moments; one that has not after ABORT_GRACE seconds hangs
    (a stopped process, a wedged driver) and would keep the agent waiting: SIGKILL for this
    process's worker processes (the agent then reports the run failed)."""
    if not ended.wait(ABORT_GRACE):
        for process in multiprocessing.active_children():
            process.kill()
