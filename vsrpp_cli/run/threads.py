"""How many threads torch's CPU operators use: the cores this process may run on (its CPU
affinity, which taskset, cgroups and SLURM set), shared among the processes of the run.

Nothing sized torch's intra-op threads before, and oversubscription is ruinous: on a 2-core
machine with one other busy process, a small forward took 15.8 s with 2 torch threads and 3.2 s
with 1 (as reported in the GPU-engine issue). `vsrpp train --nproc N` on the CPU starts N
processes that would each take every core. The user's OMP_NUM_THREADS wins, as it does for torch itself.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def available_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def user_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def threads_per_process(processes: int = 1) -> int:
    """OMP_NUM_THREADS when set, else this process's share of the cores."""
    return user_threads() or max(1, available_cores() // max(1, processes))


def use_threads(processes: int = 1) -> int:
    """Size torch's intra-op pool for one of `processes` processes sharing this machine."""
    threads = threads_per_process(processes)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


# ----------------------------------------------------------------------------- the network's thread
class NetworkThread:
    """The one thread of a process that runs the network on the CPU, with denormal floats
    flushed to zero in it and in the OpenMP threads it starts.

    Denormals (below 1.2e-38) take a slow path on many x86 CPUs, and recurrent features and
    gradients decay into them. torch.set_flush_denormal sets only the calling thread's MXCSR, and
    OpenMP's threads copy theirs from the thread that starts them: flushing in a caller whose
    OpenMP threads already run covers its share of the work alone (measured: half the elements of
    a 2-thread op). A thread of our own that flushes before its first parallel op has every one
    of its OpenMP threads flush too, whatever thread the caller is, and the caller's own
    floating-point state is left as it was (a library must not change it)."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, daemon=True, name="vsrpp-network")
        self.thread.start()

    def _serve(self) -> None:
        torch.set_flush_denormal(True)
        while True:
            work, box, done = self.jobs.get()
            try:
                box["value"] = work()
            except BaseException as error:  # handed to the caller, who raises it
                box["error"] = error
            finally:
                done.set()

    def run(self, work: Callable[[], T], cancel: threading.Event) -> T:
        """`work()` on this thread, its result or error returned to the caller. Interrupted while
        waiting (Ctrl-C), the caller sets `cancel`, which the work checks at each step, and waits
        for it to stop before raising: no forward runs on behind a finished call."""
        if threading.current_thread() is self.thread:
            return work()
        box: dict[str, Any] = {}
        done = threading.Event()
        self.jobs.put((work, box, done))
        try:
            done.wait()
        except BaseException:
            cancel.set()
            while not done.wait(0.1):
                pass
            raise
        finally:
            cancel.clear()
        if "error" in box:
            raise box["error"]
        return box["value"]


_network_thread: NetworkThread | None = None
_starting = threading.Lock()


def network_thread() -> NetworkThread:
    global _network_thread
    with _starting:
        if _network_thread is None:
            _network_thread = NetworkThread()
        return _network_thread


def flushing_denormals() -> bool:
    """Whether this thread flushes denormal floats to zero (its MXCSR's FTZ/DAZ, as torch sets them)."""
    return float(torch.tensor([1e-39]) * 1.0) == 0.0
