"""How many threads torch's CPU operators use: the cores this process may run on (its CPU
affinity, which taskset, cgroups and SLURM set), shared among the processes of the run.

Nothing sized torch's intra-op threads before, and oversubscription is ruinous: on a 2-core
machine with one other busy process, a small forward took 15.8 s with 2 torch threads and 3.2 s
with 1 (as reported in the GPU-engine issue). `vsrpp train --nproc N` on the CPU starts N
processes that would each take every core. The user's OMP_NUM_THREADS wins, as it does for torch itself.
"""

from __future__ import annotations

import os

import torch


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
