"""Worker processes through torch.distributed's elastic launcher (the machinery behind `torchrun`),
for `train` and `upscale` alike: on one machine or several, under SLURM too.

A worker sees exactly one GPU (CUDA_VISIBLE_DEVICES from its LOCAL_RANK, as torchrun users
expect) and dies with the process that launched it (Linux's parent-death signal), so a launcher
killed with kill -9 leaves no worker holding a GPU.

Workers are forked from multiprocessing's fork server, which imports torch and the worker code
once per launcher (WORKER_MODULES): a worker then starts in milliseconds instead of the 3 s of
CPU a fresh interpreter spends importing torch, and a restart or the next run of a library
caller costs no import at all. The fork server was started with the environment of the first
run; each worker takes its launcher's environment of now (adopt_environment).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import re
import secrets
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

from ..errors import UsageError

LAUNCHER_LOGGERS = ("torch.distributed.elastic", "torch.multiprocessing.spawn", "torch.distributed.launcher")
SECRET_VARIABLE = "VSRPP_RUN_SECRET"  # the run's secret, the same on every machine of a run
SHUTDOWN_SECONDS = 3  # SIGTERM to SIGKILL when the agent stops its workers (they keep nothing worth a wait)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Imported once by the fork server, before it forks any worker (multiprocessing.forkserver).
WORKER_MODULES = ["vsrpp_cli.run.workers", "vsrpp_cli.train.worker"]
# What the elastic agent sets in each worker (torch/distributed/elastic/agent/server/
# local_elastic_agent.py, _start_workers), besides TORCHELASTIC_*: kept over the launcher's. (It
# copies OMP_NUM_THREADS and CUDA_VISIBLE_DEVICES from the launcher: the launcher's are right.)
ELASTIC_VARIABLES = frozenset({
    "LOCAL_RANK", "RANK", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME", "LOCAL_WORLD_SIZE", "WORLD_SIZE",
    "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
})  # fmt: skip


@dataclass
class Launch:
    """Where and how many: the options `train` and `upscale` share (torchrun's names)."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None
    max_restarts: int = 0
    secret: str = field(default="", repr=False)  # every key of the run's stores lives under it; never printed

    @property
    def processes(self) -> int:
        return self.nproc * self.nnodes

    def resolved(self) -> Launch:
        """SLURM's variables where the command gave none; every machine told where the first is."""
        nnodes, node_rank, master_addr = from_slurm(self.nnodes, self.node_rank, self.master_addr)
        if nnodes > 1 and not (master_addr or self.rdzv_endpoint):
            raise UsageError(
                f"--nnodes {nnodes}: every machine must be told where the first one is: add --master-addr HOST "
                "(the first machine's address, the same on all of them) or --rdzv-endpoint HOST:PORT"
            )
        if node_rank >= nnodes:
            raise UsageError(f"--node-rank {node_rank}: give 0 to {nnodes - 1} for --nnodes {nnodes}")
        if nnodes > 1 and self.max_restarts:
            raise UsageError(
                "--max-restarts restarts the workers of one machine; across machines a lost machine stops the "
                "run, and the same command with --resume continues it"
            )
        endpoint = self.rdzv_endpoint
        if endpoint is None:
            port = self.master_port or (free_port() if nnodes == 1 else 29500)
            endpoint = f"{master_addr or '127.0.0.1'}:{port}"
        return Launch(self.nproc, nnodes, node_rank, master_addr, self.master_port, endpoint, self.max_restarts,
                      self.secret or run_secret(nnodes))  # fmt: skip

    @property
    def host(self) -> str:
        return (self.rdzv_endpoint or "127.0.0.1:0").rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int((self.rdzv_endpoint or "127.0.0.1:0").rsplit(":", 1)[1])


def run_secret(nnodes: int) -> str:
    """The run's secret: VSRPP_RUN_SECRET where set (every machine of a run must have the same,
    as torchrun users give each MASTER_ADDR), else one made now for a run on one machine."""
    given = os.environ.get(SECRET_VARIABLE, "")
    if given and len(given) < 16:
        raise UsageError(f"{SECRET_VARIABLE}: give at least 16 characters (e.g. `openssl rand -hex 16`)")
    return given or (secrets.token_hex(16) if nnodes == 1 else "")


def require_secret(launch: Launch) -> None:
    """Machines that share a run's stores must prove they belong to it."""
    if launch.nnodes > 1 and not launch.secret:
        raise UsageError(
            f"--nnodes {launch.nnodes}: set {SECRET_VARIABLE} to the same secret on every machine of the run (e.g. "
            f"`export {SECRET_VARIABLE}=$(openssl rand -hex 16)` once, passed to each), so that only they can join"
        )


def run_workers(
    launch: Launch, entry: Callable[..., Any], *args: Any, rendezvous_file: Path | None = None
) -> dict[int, Any]:
    """`entry(*args)` in launch.nproc processes here, as part of launch.nnodes machines; returns
    when all of them have, raises torch's ChildFailedError when one failed (after the agent has
    stopped the others). The agent turns SIGINT/SIGTERM into its own exception while it runs;
    this process's handlers are put back afterwards.

    `rendezvous_file`: on one machine, the agent meets its workers through this file (a FileStore)
    rather than a TCP store, and opens no TCP server of its own for them: nothing listens.
    Returns what each of this machine's workers returned, by global rank."""
    from torch.distributed.launcher.api import elastic_launch

    by_file = rendezvous_file is not None and launch.nnodes == 1
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    # The agent logs each failure as a traceback, and a signal as a warning; the caller says it
    # in one line. Its modules' loggers carry levels of their own (torch's get_logger sets them),
    # so each is quieted, not only their parents.
    quiet = [logging.getLogger(name) for name in sorted(logging.root.manager.loggerDict)
             if name.startswith(LAUNCHER_LOGGERS)]  # fmt: skip
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)
    # The agent otherwise serves a TCP store (on every interface) for its workers' own process
    # group, which vsrpp's upscale workers never make (dynamic_rendezvous.py reads this variable).
    shared_store = os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE")
    if by_file:
        os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    # The process's one fork server (multiprocessing keeps one): a caller that uses it too finds
    # our modules preloaded, which costs it nothing but their import, once.
    multiprocessing.set_forkserver_preload(WORKER_MODULES)
    try:
        config = launch_config(launch, rendezvous_file if by_file else None)
        with rendezvous_events_named_by_frame():
            return elastic_launch(config, as_worker)(entry, os.getpid(), dict(os.environ), *args)
    finally:
        if by_file:
            if shared_store is None:
                os.environ.pop("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", None)
            else:
                os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = shared_store
        for number, handler in handlers.items():
            if handler is not None:
                signal.signal(number, handler)
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


@contextmanager
def rendezvous_events_named_by_frame() -> Iterator[None]:
    """For the launch's length, torch's c10d rendezvous names the events it records by
    `caller_name`. Its own get_method_name (torch/distributed/elastic/rendezvous/
    dynamic_rendezvous.py) calls inspect.stack() twice an event, which reads the source of every
    frame on the stack, for names that torch's default event handler drops: nine names a launch,
    20-30 ms from a shallow caller (`vsrpp` itself) and 0.2-0.25 s from a deep one (a test under
    pytest), on the launch's critical path (RESULTS 2026-12-07, fourteenth). The same names, from
    the frame itself; a torch without the function is left as it is."""
    from torch.distributed.elastic.rendezvous import dynamic_rendezvous

    original = getattr(dynamic_rendezvous, "get_method_name", None)
    if original is None or original is caller_name:  # absent, or a launch in another thread has it
        yield
        return
    dynamic_rendezvous.get_method_name = caller_name
    try:
        yield
    finally:
        dynamic_rendezvous.get_method_name = original


def caller_name(depth: int = 2) -> str:
    """The name of the function `depth` frames above this one: what inspect.stack()[depth].function
    names, without reading any source."""
    try:
        return sys._getframe(depth).f_code.co_name
    except ValueError:  # the stack is not that deep (torch's answer then)
        return "no_method_name"


def launch_config(launch: Launch, rendezvous_file: Path | None) -> Any:
    """The elastic agent's configuration: a static rendezvous across machines, a FileStore at
    `rendezvous_file` on one machine, else torch's c10d rendezvous."""
    from torch.distributed.launcher.api import LaunchConfig

    multi = launch.nnodes > 1
    if multi:
        rendezvous = {"rdzv_backend": "static", "rdzv_endpoint": launch.rdzv_endpoint or "",
                      "rdzv_configs": {"rank": launch.node_rank}}  # fmt: skip
    elif rendezvous_file is not None:
        rendezvous = {"rdzv_backend": "c10d", "rdzv_endpoint": str(rendezvous_file),
                      "rdzv_configs": {"store_type": "file"}}  # fmt: skip
    else:
        rendezvous = {"rdzv_backend": "c10d", "rdzv_endpoint": launch.rdzv_endpoint or "", "rdzv_configs": {}}
    return LaunchConfig(
        min_nodes=launch.nnodes,
        max_nodes=launch.nnodes,
        nproc_per_node=launch.nproc,
        run_id=os.environ.get("SLURM_JOB_ID") or ("vsrpp" if multi else uuid.uuid4().hex),
        **rendezvous,
        max_restarts=launch.max_restarts,
        monitor_interval=0.2,
        start_method="forkserver",
        # Older PyTorch (LaunchConfig without the field) waits its own default before SIGKILL.
        **({"shutdown_timeout": SHUTDOWN_SECONDS} if "shutdown_timeout" in LaunchConfig.__dataclass_fields__ else {}),
    )


def failure_line(error: BaseException) -> str:
    """What torch's ChildFailedError says about the first failed worker, in one line."""
    failures = getattr(error, "failures", None) or {}
    for rank, failure in sorted(failures.items()):
        code = failure.exitcode
        how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        return f"worker {rank} stopped ({how})"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


# ----------------------------------------------------------------------------- in the worker
def as_worker(entry: Callable[..., Any], launcher: int, environ: dict[str, str], *args: Any) -> Any:
    """`entry(*args)` in a worker: tied to the launcher's life, with its environment."""
    die_with_parent(launcher)
    adopt_environment(environ)
    return entry(*args)


def adopt_environment(environ: dict[str, str]) -> None:
    """The launcher's environment as it was at the launch (where a worker started by spawn would
    have found it), plus what the elastic agent set for this worker: a fork server started by an
    earlier run holds that run's variables (a failpoint, a device)."""
    agent = {k: v for k, v in os.environ.items() if k in ELASTIC_VARIABLES or k.startswith("TORCHELASTIC_")}
    os.environ.clear()
    os.environ.update(environ)
    os.environ.update(agent)


def worker_environment(local_rank: int, environ: dict[str, str]) -> dict[str, str]:
    """The variables a worker sets before CUDA starts: its one GPU, picked from those the launcher
    was given (CUDA_VISIBLE_DEVICES=3,5 and local rank 1: GPU 5), seen as cuda:0."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return {"CUDA_VISIBLE_DEVICES": str(local_rank)}
    devices = [d for d in visible.split(",") if d.strip()]
    if local_rank >= len(devices):
        return {}  # fewer GPUs than workers (CPU workers): nothing to narrow
    return {"CUDA_VISIBLE_DEVICES": devices[local_rank]}


def die_with_parent(launcher: int) -> None:
    """SIGKILL this process when its parent dies (Linux; elsewhere a no-op): the fork server, which
    exits when the launcher does; and at once if the launcher is already gone (it may have died
    before the call).

    A forked worker inherits the fork server's end of life: the write end of the pipe whose end
    it waits for (multiprocessing.forkserver._serve_one), and it waits for every holder. Kept, a
    worker that cannot run (stopped, or hung) would keep the fork server, and so itself, alive
    for ever after its launcher died; closed, only the launcher holds the fork server."""
    alive = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:
        os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent or not is_alive(launcher):
        os.kill(os.getpid(), signal.SIGKILL)


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: there all the same
        pass
    return True


# ----------------------------------------------------------------------------- where
def from_slurm(nnodes: int, node_rank: int, master_addr: str | None) -> tuple[int, int, str | None]:
    """Inside a SLURM allocation the node count, this node's rank and the first host come from
    its variables unless given."""
    if "SLURM_JOB_ID" not in os.environ or nnodes != 1:
        return nnodes, node_rank, master_addr
    nnodes = int(os.environ.get("SLURM_NNODES", 1))
    node_rank = int(os.environ.get("SLURM_NODEID", 0))
    master_addr = master_addr or os.environ.get("MASTER_ADDR") or first_host(os.environ.get("SLURM_JOB_NODELIST", ""))
    return nnodes, node_rank, master_addr


def first_host(nodelist: str) -> str | None:
    """'gpu[03-05,07],cpu1' -> 'gpu03'."""
    match = re.match(r"([^\[,]+)(?:\[([^\]]+)\])?", nodelist)
    if not match:
        return None
    prefix, ranges = match.groups()
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def check_port_free(port: int) -> None:
    """The first machine's rendezvous port must be free before the agent serves it there: taken,
    torch would hang as a client of whatever holds it."""
    try:
        with socket.create_server(("", port)):
            pass
    except OSError as error:
        raise UsageError(
            f"--master-port {port} is taken here ({os.strerror(error.errno or 0)}); give another, the same on every "
            "machine"
        ) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
