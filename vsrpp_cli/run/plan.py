"""A run's first steps, shared by every way it goes on: the input opened, the device, precision
and model chosen, the window shaped (`open_run`); then, for a run in segments, the plan a resume
keeps (`new_plan`), what a resume must match (`fingerprint`) and the job the workers take
(`make_job`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..network import BasicVSRPlusPlus
from ..video.colour import YuvTarget
from ..video.decode import Source
from ..video.encode import EncoderSettings, container_for
from ..video.info import VideoInfo
from ..video.inputs import is_one_pass, open_source
from ..video.shots import find_cuts
from ..weights.checkpoint import load_model
from ..weights.hashing import sample_sha256, sha256_of
from .engine import PRECISIONS, check_backend, pick_dtype, worker_device
from .folder import RunFolder
from .launch import Launch
from .options import Options, Summary
from .sizing import MIN_TILE, plan, tiles_notice, window_shape
from .windows import WindowTable
from .workers import workers_device


@dataclass
class Run:
    """A run as its first steps find it."""

    source_path: Path
    output: Path
    options: Options
    launch: Launch
    summary: Summary
    tell: Callable[[str], None]
    source: Source
    device: torch.device
    scale: int
    chunk: int  # frames each window keeps
    tile: int  # 0: whole frames
    container_format: str | None  # None: a folder of PNG frames
    times: list[int] | None  # every frame's time, where workers seek by them (a shared run)
    # The network, loaded once to check the checkpoint and read its scale and width, for the
    # worker in this process to run (None where workers are processes: each loads its own).
    model: BasicVSRPlusPlus | None

    @property
    def info(self) -> VideoInfo:
        return self.source.info

    @property
    def size(self) -> tuple[int, int]:
        return self.info.width * self.scale, self.info.height * self.scale

    @property
    def one_pass(self) -> bool:
        """A pipe in or out: read and written once, front to back (one_pass.py)."""
        return is_one_pass(self.source_path, self.output)

    @property
    def shared(self) -> bool:
        return self.launch.processes > 1

    @property
    def total(self) -> int | None:
        return len(self.times) if self.times else self.info.frame_count or self.info.frame_estimate

    @property
    def settings(self) -> EncoderSettings:
        o = self.options
        return EncoderSettings(self.container_format, o.codec, o.crf, o.preset, o.pix_fmt)


def open_run(source_path: Path, output: Path, options: Options, launch: Launch, notice: Callable[[str], None]) -> Run:
    """The input, the device and precision (checked against the deformable conv's backend), the
    model's scale and width, the window's frames and tiles."""
    summary = Summary(str(source_path), str(output), colour=options.colour, chunk_overlap=options.chunk_overlap)
    tell = summary.teller(notice)
    if 0 < options.tile < MIN_TILE:
        tell(f"--tile {options.tile}: every tile still runs the network's fixed work (flows on at least 64x64 "
             f"pixels), so tiles under {MIN_TILE} px are many times slower; 256 or more is usual")  # fmt: skip
    container_format = container_for(output, options.format)
    source = open_source(source_path, options.deinterlace, tell, options.fps)
    try:
        shared = launch.processes > 1
        device = workers_device(options.device, launch) if shared else worker_device(options.device, 1)
        dtype = pick_dtype(options.precision, device)
        summary.device, summary.precision = str(device), next(n for n, v in PRECISIONS.items() if v == dtype)
        check_backend(options.deform_backend, device, dtype)
        model = load_model(options.weights, deform_backend=options.deform_backend)
        info = source.info
        chunk, tile = window_shape(device, info.width, info.height, model.mid_channels, dtype.itemsize, options)
        if tile != options.tile:
            tell(tiles_notice(info, chunk + 2 * options.chunk_overlap, tile))
        times = source.frame_times() if shared else None  # workers seek by them; one process reads on
    except BaseException:
        source.close()  # (a stream read once holds its container open)
        raise
    return Run(source_path, output, options, launch, summary, tell, source, device, model.scale, chunk, tile,
               container_format, times, None if shared else model)  # fmt: skip


def new_plan(run: Run) -> dict[str, Any]:
    """The plan of a new run (a resumed one keeps its own): window size, windows per segment,
    tiles, determinism and the shots' cuts."""
    options = run.options
    new = plan(run.chunk, options.segment_frames, run.container_format is None, run.total, run.launch.processes)
    new["tile"] = run.tile
    # Only where asked, single or shared alike: each frame comes from one process, so workers
    # need not compute alike for the join. Kept with the plan, so a resume computes as the run began.
    new["deterministic"] = bool(options.deterministic)
    # Found (None: not known yet) as the frames are read: by the worker in one process; in a
    # shared run by the writer's pass, which its workers follow (pending_cuts), kept here at its end.
    if options.scene_cuts == "auto":
        new["cuts"] = None
    else:
        new["cuts"] = find_cuts(options.scene_cuts, run.source, run.total if run.times else None, run.tell)
    return new


def pending_cuts(run: Run, plan: dict[str, Any]) -> bool:
    """A shared run whose cuts are still to be found: its workers start on the shots the writer's
    pass has found while it reads on (writer.py), rather than wait for the whole video's."""
    return run.shared and plan.get("cuts") is None


def make_job(run: Run, folder: RunFolder, identity: dict[str, Any], target: YuvTarget | None) -> dict[str, Any]:
    """What every worker takes from the writer: the options as the run keeps them (a resume
    computes as the run began), the plan, the frame times, the segments and those committed."""
    pending = pending_cuts(run, folder.plan)
    segments = None  # unknown in one process (the end is where the frames end), or until the cuts are
    if run.times and not pending:
        table = WindowTable(folder.plan["chunk_frames"], run.options.chunk_overlap, folder.plan["cuts"] or [],
                            len(run.times))  # fmt: skip
        segments = table.segment_count(folder.plan["windows_per_segment"])
    kept = replace(run.options, deterministic=folder.plan.get("deterministic", bool(run.options.deterministic)))
    return {
        "run_id": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16],
        "options": kept.as_job(),
        "fingerprint": identity,
        "plan": folder.plan,
        "times": run.times,
        "total": len(run.times) if run.times else None,
        "segments": segments,
        "cuts_pending": pending,  # the cuts come through the store as the writer finds them
        "committed": sorted(folder.closed_segments()),
        "target": asdict(target) if target else None,
        "size": list(run.size),
        "container_format": run.container_format,
    }


def fingerprint(run: Run, target: YuvTarget | None) -> dict[str, Any]:
    """Everything that changes the output's frames or packets: a resumed run must match it."""
    source_path, source, options, summary = run.source_path, run.source, run.options, run.summary
    return {
        "input": str(source_path.resolve()),
        "input_size": source_path.stat().st_size if source_path.is_file() else len(source.files),
        "input_sample": sample_sha256(source_path, source.files or None),
        "input_mtime_ns": source_path.stat().st_mtime_ns,
        "weights_sha256": sha256_of(options.weights),
        "chunk_frames": options.chunk_frames,  # as asked (0: sized to the device; the plan has the size)
        "chunk_overlap": options.chunk_overlap,
        "tile": options.tile,
        "tile_overlap": options.tile_overlap,
        "precision": summary.precision,
        "device": summary.device.split(":")[0],
        "colour": summary.colour,
        "stored_format": target.format if target else "rgb",
        "codec": options.codec,
        "crf": options.crf,
        "preset": options.preset,
        "pix_fmt": options.pix_fmt,
        "deinterlace": options.deinterlace,
        "segment_frames": options.segment_frames,
        "strength": options.strength,
        "fps": options.fps,
        "deterministic": options.deterministic,  # as asked (None: automatic; the plan holds what it meant)
        "deform_backend": options.deform_backend,
        "scene_cuts": cuts if (cuts := options.scene_cuts) in ("auto", "off") else sha256_of(Path(cuts)),
        "vsrpp": __version__,
    }
