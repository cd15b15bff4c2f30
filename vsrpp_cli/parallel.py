"""One video shared among worker processes, window by window: `upscale --nproc-per-node N` (one
per GPU, or CPU processes), on one machine or on several that share the output's folder.

Windows are independent given their context, so any worker can run any window, and the frames
are those of a single-process run. The run's folder (resume.py) is where they meet:
- a worker claims the next window nobody has claimed by creating its claim file (exclusive
  create: atomic on local and network file systems), decodes only that window's frames (it seeks
  by the exact table of frame times), runs the network and stores the window losslessly;
- the writer (in the first machine's launching process) takes the stored windows in order,
  encodes them segment by segment and, at the end, joins the segments with the audio, exactly as
  a single run does; closing a segment deletes its windows;
- workers claim at most one segment plus one window each ahead of the writer, so the folder
  holds a bounded number of windows and no process holds more than one window in memory.

A worker that fails (out of memory, killed) stops the run with its message; the windows stored so
far are kept, claims are cleared, and `--resume` continues with any number of workers.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_model
from .decode import open_source
from .encode import EncoderSettings, Muxer, container_for
from .engine import PRECISIONS, Engine, pick_device, pick_dtype
from .errors import UsageError, VsrppError, WorkerError, os_error_advice
from .resume import RunStore, remove
from .threads import available_cores, user_threads
from .upscale import (
    Options,
    SegmentWriter,
    Summary,
    check_output,
    cleanup,
    fingerprint,
    finish,
    join_frame_segments,
    muxer_target,
    partial_folder,
    path_bytes,
    plan,
    segment_maker,
    temporary_path,
)

POLL = 0.05  # seconds between looks at the folder
HEARTBEAT = 5.0  # seconds between a worker's signs of life (worker_<rank>.alive)
SILENT = 120.0  # a worker on another machine not heard from for this long has stopped


@dataclass
class WorkerJob:
    """Everything a worker needs, picklable (workers start fresh: the spawn method)."""

    rank: int  # across all machines
    world: int
    device: str
    threads: int
    source: Path
    folder: Path  # the run's folder
    options: Options
    chunk: int
    windows: int
    per_segment: int
    times: list[int]
    target: Any  # the YUV format stored windows are kept in (None: RGB)


def shared_devices(device: str, nproc: int) -> list[str]:
    """One device per local worker: cuda:0..N-1, or the CPU for every one."""
    if device.startswith("cuda:"):
        raise UsageError(f"--device {device}: with --nproc-per-node {nproc}, give --device cuda (or auto)")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return ["cpu"] * nproc
    available = torch.cuda.device_count()
    if available < nproc:
        raise UsageError(
            f"--nproc-per-node {nproc}: only {available} CUDA device(s) here; give --device cpu to use processes"
        )
    return [f"cuda:{index}" for index in range(nproc)]


def upscale_shared(
    source_path: Path,
    output: Path,
    options: Options,
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    on_progress: Callable[[float, int | None], None] = lambda done, total: None,
    notice: Callable[[str], None] = lambda message: None,
) -> Summary:
    """`upscale` with its windows shared among nproc workers on each of nnodes machines; the
    first machine writes the output (the others run workers only)."""
    started = time.perf_counter()
    writes = node_rank == 0
    container_format = container_for(output)
    if writes:
        check_output(output, options.overwrite)
    summary = Summary(str(source_path), str(output), colour=options.colour)

    def tell(message: str) -> None:
        summary.notices.append(message)
        notice(message)

    if not writes and not wait_for_first_machine(partial_folder(output), output, options.overwrite, tell):
        tell(f"{output.name} is finished and no run is open for it: nothing left for this machine")
        return summary

    source = open_source(source_path, options.deinterlace, tell if writes else lambda m: None)
    info = source.info
    devices = shared_devices(options.device, nproc)
    summary.device = ",".join(dict.fromkeys(devices))
    dtype = pick_dtype(options.precision, pick_device(devices[0]))
    summary.precision = next(n for n, v in PRECISIONS.items() if v == dtype)
    model = load_model(options.weights)
    size = (info.width * model.scale, info.height * model.scale)
    settings = EncoderSettings(container_format, options.codec, options.crf, options.preset, options.pix_fmt)
    times = source.frame_times()
    total = len(times)
    on_progress(0, total)
    temporary = temporary_path(output)
    muxer = store = writer = None
    workers: list[multiprocessing.Process] = []
    try:
        if writes and container_format is not None:
            muxer = Muxer(temporary, settings, info, size, source_path if source_path.is_file() else None, tell)
        elif writes:
            remove(temporary)  # a folder left by a killed run
            temporary.mkdir()
        # Every machine's workers store windows in the output's YUV format when colour runs on the device.
        on_device = container_format is not None and options.colour == "device"
        target = muxer_target(settings, info, size) if on_device else None
        run = fingerprint(source_path, source, options, summary, target)
        first_plan = plan(options, pick_device(devices[0]), info, model.mid_channels, container_format is None)
        store = open_store(partial_folder(output), run, first_plan, options, writes)
        chunk, per_segment = store.plan["chunk_frames"], store.plan["windows_per_segment"]
        windows = math.ceil(total / chunk)
        summary.chunk_frames, summary.chunk_overlap, summary.tile = chunk, options.chunk_overlap, options.tile
        threads = user_threads() or max(1, available_cores() // nproc)
        context = multiprocessing.get_context("spawn")
        for local, device in enumerate(devices):
            rank = node_rank * nproc + local
            job = WorkerJob(rank, nnodes * nproc, device, threads, source_path, store.folder, options, chunk, windows,
                            per_segment, times, target)  # fmt: skip
            process = context.Process(target=work, args=(job,), name=f"vsrpp-worker-{rank}", daemon=True)
            process.start()
            workers.append(process)
        if writes:
            writer = SegmentWriter(segment_maker(store, settings, info, size), store)
            write_in_order(store, writer, workers, windows, per_segment, chunk, times, target, summary, on_progress)
            writer.close()
        wait_for(workers, store.folder)
        if muxer is not None:
            muxer.mux(store.video_segments())
            muxer.close()
        elif writes:
            join_frame_segments(store.frame_segments(), temporary)
    except OSError as error:
        stop(workers)
        if writes:  # the other machines leave the output and the run's folder to the first
            cleanup(writer, muxer, temporary, store)
        advice = os_error_advice(error, output.parent, f"{output.name} or its finished segments")
        if advice is None:
            raise
        raise advice from None
    except BaseException:
        stop(workers)
        if writes:
            cleanup(writer, muxer, temporary, store)
        raise
    summary.workers = worker_stats(store.folder, nnodes * nproc)
    if writes:
        finish(temporary, output)
        store.remove()
        summary.output_bytes = path_bytes(output)
    summary.frames = total
    summary.seconds = time.perf_counter() - started
    return summary


def wait_for_first_machine(folder: Path, output: Path, overwrite: bool, notice: Callable[[str], None]) -> bool:
    """The other machines wait for the first to open the run's folder. False when there is nothing
    to wait for: the output is there and no run is open for it (a machine that came late)."""
    told = False
    while not (folder / "run.json").exists():
        if output.exists() and not overwrite:  # with --overwrite, the first machine has yet to start
            return False
        if not told:
            notice(f"waiting for the machine with --node-rank 0 to open the run's folder ({folder.name})")
            told = True
        time.sleep(POLL)
    return True


def open_store(folder: Path, run: dict, first_plan: dict, options: Options, writes: bool) -> RunStore:
    """The first machine makes (or, with --resume, reopens) the run's folder; the others take its
    plan (they have waited for it: wait_for_first_machine)."""
    if writes:
        store = RunStore.open(folder, run, first_plan, options.resume, options.overwrite)
        for stale in folder.glob("worker_*"):
            stale.unlink()
        return store
    saved = json.loads((folder / "run.json").read_text())
    differing = [key for key in run if saved["fingerprint"].get(key) != run[key]]
    if differing:
        raise UsageError(
            f"{folder} holds a run with another {', '.join(differing)} than this machine's; give every machine the "
            "same command and the same input"
        )
    return RunStore(folder, saved["plan"])


def write_in_order(
    store: RunStore,
    writer: SegmentWriter,
    workers: list[multiprocessing.Process],
    windows: int,
    per_segment: int,
    chunk: int,
    times: list[int],
    target: Any,
    summary: Summary,
    on_progress: Callable[[float, int | None], None],
) -> None:
    closed = store.closed_segments()
    for index in range(windows):
        kept = range(index * chunk, min((index + 1) * chunk, len(times)))
        segment = index // per_segment
        if segment not in closed:
            while not store.has_window(index):
                check(workers, store.folder)
                check_remote(store.folder, index, len(workers))
                time.sleep(POLL)
            for frame, image in zip(kept, store.load_window(index, target), strict=True):
                writer.put(segment, image, times[frame])
            if index % per_segment == per_segment - 1:
                writer.close_segment(segment, range(segment * per_segment, index + 1))
        else:
            summary.windows_resumed += 1
        on_progress(kept.stop, len(times))


def work(job: WorkerJob) -> None:
    """A worker process: claim, decode, run and store windows until none is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launching process stops workers itself
    os.environ.setdefault("OMP_NUM_THREADS", str(job.threads))
    store = RunStore(job.folder, {})
    (job.folder / f"worker_{job.rank}.pid").write_text(str(os.getpid()))  # which process is which
    threading.Thread(target=beat, args=(job.folder / f"worker_{job.rank}.alive",), daemon=True).start()
    stats = {"rank": job.rank, "device": job.device, "windows": 0, "frames": 0, "seconds": 0.0}
    try:
        options = job.options
        device = torch.device(job.device)
        engine = Engine(load_model(options.weights), device, pick_dtype(options.precision, device), options.tile,
                        options.tile_overlap, graphs=options.graphs, batch=1, strength=options.strength)  # fmt: skip
        source = open_source(job.source, options.deinterlace)
        began = time.perf_counter()
        while (index := claim_next(job, store)) is not None:
            keep_start = index * job.chunk
            start = max(0, keep_start - options.chunk_overlap)
            stop = min(len(job.times), keep_start + job.chunk + options.chunk_overlap)
            frames = source.frames(keep_yuv=options.colour == "device", first=start, times=job.times)
            images = [f.image for f in itertools.islice(frames, stop - start)]
            frames.close()
            kept = slice(keep_start - start, min(keep_start + job.chunk, len(job.times)) - start)
            store.save_window(index, engine.upscale(images, kept, source.info.bit_depth, job.target))
            (job.folder / f"window_{index:06d}.claim").unlink(missing_ok=True)
            stats["windows"] += 1
            stats["frames"] += kept.stop - kept.start
        stats["seconds"] = round(time.perf_counter() - began, 3)
        stats["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if job.folder.is_dir():  # (a worker on another machine may outlive the run's folder)
            (job.folder / f"worker_{job.rank}.json").write_text(json.dumps(stats))
    except BaseException as error:
        message = str(error) if isinstance(error, VsrppError) else f"{type(error).__name__}: {error}"
        (job.folder / f"worker_{job.rank}.error").write_text(message.splitlines()[0] if message else "failed")
        raise SystemExit(1) from None


def claim_next(job: WorkerJob, store: RunStore) -> int | None:
    """The first window nobody has done or claimed, within what the writer can take soon; None
    when there is none, or when the run is over (the writer removed its folder)."""
    if not job.folder.is_dir():
        return None
    closed = store.closed_segments()
    for index in range(first_open_window(closed, job.per_segment), job.windows):
        if index // job.per_segment in closed or store.has_window(index):
            continue
        while index >= writer_frontier(store, job):  # the writer is behind: wait for it
            if not job.folder.is_dir():
                return None
            time.sleep(POLL)
        try:
            descriptor = os.open(job.folder / f"window_{index:06d}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        except FileNotFoundError:  # the folder went: the run is over
            return None
        os.write(descriptor, str(job.rank).encode())
        os.close(descriptor)
        if store.has_window(index):  # finished by another worker between our look and our claim
            (job.folder / f"window_{index:06d}.claim").unlink(missing_ok=True)
            continue
        return index
    return None


def writer_frontier(store: RunStore, job: WorkerJob) -> int:
    """Windows up to here may be claimed: the segment being written, then one window per worker."""
    return first_open_window(store.closed_segments(), job.per_segment) + job.per_segment + job.world


def first_open_window(closed: set[int], per_segment: int) -> int:
    """The first window of the first segment not yet closed (segments close in order)."""
    return next(s for s in itertools.count() if s not in closed) * per_segment


def check(workers: list[multiprocessing.Process], folder: Path) -> None:
    for rank, process in enumerate(workers):
        if process.exitcode not in (None, 0):
            error = folder / f"worker_{rank}.error"
            code = process.exitcode
            how = error.read_text() if error.exists() else f"killed by signal {-code}" if code < 0 else f"exit {code}"
            raise WorkerError(
                f"worker {rank} ({process.name}) stopped ({how}); the windows finished so far are kept: run the "
                "same command with --resume (any number of workers) to continue"
            )


def check_remote(folder: Path, index: int, local: int) -> None:
    """The window the writer waits for is claimed by a worker on another machine: that worker
    must have been heard from lately, or its machine has stopped (it cannot be watched as a
    process from here)."""
    try:
        rank = int((folder / f"window_{index:06d}.claim").read_text() or -1)
        heard = (folder / f"worker_{rank}.alive").stat().st_mtime
    except (OSError, ValueError):
        return  # not claimed yet, or just finished
    if rank >= local and time.time() - heard > SILENT:
        raise WorkerError(
            f"worker {rank} (another machine) has not been heard from for {SILENT:.0f} s while holding window "
            f"{index}; the windows finished so far are kept: run the same command with --resume to continue"
        )


def beat(path: Path) -> None:
    """A worker's sign of life, from a thread (the network may hold the main one for minutes),
    until the run's folder goes."""
    while True:
        try:
            path.write_text(str(time.time()))
        except OSError:
            return
        time.sleep(HEARTBEAT)


def wait_for(workers: list[multiprocessing.Process], folder: Path) -> None:
    while any(p.is_alive() for p in workers):
        check(workers, folder)
        for process in workers:
            process.join(POLL)
    check(workers, folder)


def stop(workers: list[multiprocessing.Process]) -> None:
    for process in workers:
        if process.is_alive():
            process.terminate()
    for process in workers:
        process.join()


def worker_stats(folder: Path, world: int) -> list[dict[str, Any]]:
    stats = []
    for rank in range(world):
        path = folder / f"worker_{rank}.json"
        if path.exists():
            facts = json.loads(path.read_text())
            facts["fps"] = round(facts["frames"] / facts["seconds"], 3) if facts["seconds"] else 0.0
            stats.append(facts)
    return stats


__all__ = ["WorkerError", "upscale_shared"]
