"""Starting and ending a run's workers: one in a thread beside the writer (one process), or
worker processes through torch.distributed's elastic launcher (launch.py) on this machine and
others; their device; a stopped run's hung workers killed after a grace period."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import ExitStatus, InputError, Interrupted, UsageError, VsrppError, WorkerError
from ..network import BasicVSRPlusPlus
from .coordination import HEARTBEAT, POLL, AbortError, Board, Watch
from .engine import pick_device
from .folder import remove
from .launch import Launch, check_port_free, failure_line, run_workers, worker_environment
from .worker import Local, Worker
from .writer import Writer


# ----------------------------------------------------------------------------- entry points
class InProcess:
    """The in-process worker (rank 0 of 1), in a thread. `done` is set when it ends, `error` is
    what it failed with: an Event, since a Thread.join interrupted by a signal can leave the
    thread reported as ended while it runs on (CPython's _wait_for_tstate_lock)."""

    def __init__(
        self, board: Board, local: Local, notice: Callable[[str], None], moved: Callable[[], None],
        model: BasicVSRPlusPlus | None = None,
    ) -> None:  # fmt: skip
        self.stop, self.done = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, args=(board, local, notice, moved, model), daemon=True,
                                       name="vsrpp-worker")  # fmt: skip
        self.thread.start()

    def _main(
        self, board: Board, local: Local, notice: Callable[[str], None], moved: Callable[[], None],
        model: BasicVSRPlusPlus | None,
    ) -> None:  # fmt: skip
        try:
            Worker(board, local, 0, 1, 0, stop=self.stop, notice=notice, moved=moved, model=model).run()
        except AbortError:
            pass
        except BaseException as error:  # the writer raises it as it was
            self.error = error
        finally:
            self.done.set()


def elastic_main(host: str, port: int, local: Local, secret: str) -> dict[str, Any] | None:
    """A worker process started by the elastic launcher (RANK, LOCAL_RANK, WORLD_SIZE and
    TORCHELASTIC_RESTART_COUNT in its environment)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if local.device != "cpu":
        os.environ.update(worker_environment(int(os.environ["LOCAL_RANK"]), dict(os.environ)))
    os.environ["OMP_NUM_THREADS"] = str(local.threads)  # read by the Engine (threads.use_threads)
    try:
        board = Board.connect(host, port, secret)
    except Exception as error:
        print(f"vsrpp worker {rank}: the writer at {host}:{port} does not answer ({error})", file=sys.stderr)
        sys.exit(1)
    stop_beating = threading.Event()
    beat = threading.Thread(target=keep_beating, args=(board, rank, stop_beating), daemon=True, name="vsrpp-beat")
    beat.start()
    failed = True
    try:
        round_ = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
        board.start_round(rank, round_)
        stats = Worker(board, local, rank, world, round_).run()
        failed = False
    except AbortError:
        pass
    except BaseException as error:
        with contextlib.suppress(Exception):  # the board may be gone with the writer: exit all the same
            board.fail(f"worker {rank}: {describe(error)}")
    finally:
        # The beat thread stops before the process's teardown destroys the store client it uses
        # (a finished worker was once ended by SIGABRT in the teardown, which the agent takes for
        # a failure). The return itself is the agent's: it waits for a worker's return value.
        stop_beating.set()
        beat.join()
    if failed:
        sys.exit(1)
    board.leave(rank)  # after its last beat: the count it leaves at is the last one the writer sees
    if int(os.environ.get("LOCAL_WORLD_SIZE", world)) < world:  # workers on other machines: Board.wait_end
        try:
            board.wait_end(world)
        except Exception:  # stopped, or the writer is gone: the writer's machine says why
            sys.exit(1)
    return stats  # to this machine's agent (its launcher need not reach the store to know it)


def keep_beating(board: Board, rank: int, stop: threading.Event) -> None:
    """Signs of life from a thread (the network may hold the main one for minutes); the worker
    ends itself when the writer has stopped the run or can no longer be reached."""
    while not stop.is_set():
        try:
            board.beat(rank)
            board.check_abort()
        except BaseException:
            os._exit(1)
        stop.wait(HEARTBEAT)


def describe(error: BaseException) -> str:
    message = str(error) if isinstance(error, VsrppError) else f"{type(error).__name__}: {error}"
    return message.splitlines()[0] if message else type(error).__name__


RENDEZVOUS_FILE = "rendezvous.partial"  # one machine's elastic rendezvous (a FileStore), in the run's folder


ABORT_GRACE = 5.0  # seconds a stopped run's workers have to end (they look every HEARTBEAT) before they are killed


def run_workers_here(
    job: dict, local: Local, writer: Writer, tell: Callable[[str], None], model: BasicVSRPlusPlus | None = None
) -> list[dict]:
    """One process: the worker in a thread (running `model`, the run's checkpoint already
    loaded, where given), the writer in this one."""
    board = Board.in_memory()
    board.publish_job(writer.intake.publish(job))
    worker = InProcess(board, local, tell, lambda: writer.show_progress(board, 1), model)
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
    if not one_machine:
        writer.serve_intake(launch.port + 2)  # for machines that do not see the run's folder
    board.publish_job(writer.intake.publish(job))
    stop = threading.Event()
    failure: list[BaseException] = []
    before = own_children()

    def serve() -> None:
        watch = Watch(board, launch.processes)
        try:
            while not stop.is_set():
                writer.poll(board, launch.processes, watch)
                if writer.complete():
                    board.finish()  # workers waiting for the run's end may go (Board.wait_end)
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
        run_workers(launch, elastic_main, host, board.port, local, launch.secret, rendezvous_file=rendezvous)
        # The agent's return ends this machine's part, not the run (several machines: Board.wait_end).
        # The run ends when the writer has every segment, or a failure (which the watch sees).
        while not failure and not writer.complete() and not board.everyone_left(launch.processes):
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
        writer.intake.close()
        remove(rendezvous)
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
        returned = run_workers(launch, elastic_main, launch.host, launch.port + 1, local, launch.secret)
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
