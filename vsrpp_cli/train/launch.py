"""Starting training: N processes per machine through torch.distributed's elastic launcher (the
machinery behind `torchrun`), on one machine or several, under SLURM too."""

from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path

import torch
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from .. import zoo
from ..errors import ResumeError, UsageError
from .config import TrainConfig
from .data import DataError, folder_clips, reds_clips
from .worker import main as worker_main


def launch(
    config: TrainConfig,
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
    rdzv_endpoint: str | None = None,
    resume: bool = False,
) -> None:
    """Check the data, write the resolved configuration into the work dir, run the workers."""
    if nnodes > 1 and not (master_addr or rdzv_endpoint or "SLURM_JOB_ID" in os.environ):
        raise UsageError(
            f"--nnodes {nnodes}: every machine must be told where the first one is: add --master-addr HOST "
            "(the first machine's address, the same on all of them) or --rdzv-endpoint HOST:PORT"
        )
    if config.dataset == "reds":
        reds_clips(config)  # fail here, clearly, rather than in N workers
    else:
        folder_clips(config)
    if not config.spynet and not config.init_from:
        config = config.updated({"spynet": str(zoo.ensure_model(zoo.SPYNET))})
    work_dir = Path(config.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if resume and not (work_dir / "latest.state.pth").exists():
        raise ResumeError(f"--resume: {work_dir} holds no run to continue (latest.state.pth)")
    if not resume and (work_dir / "latest.pth").exists():
        raise ResumeError(f"{work_dir} already holds a run; add --resume to continue it or choose another --work-dir")
    config.save(work_dir / "config.json")

    nnodes, node_rank, master_addr = from_slurm(nnodes, node_rank, master_addr)
    if rdzv_endpoint is None:
        port = master_port or (free_port() if nnodes == 1 else 29500)
        rdzv_endpoint = f"{master_addr or '127.0.0.1'}:{port}"
    launch_config = LaunchConfig(
        min_nodes=nnodes,
        max_nodes=nnodes,
        nproc_per_node=nproc,
        run_id=os.environ.get("SLURM_JOB_ID") or ("vsrpp" if nnodes > 1 else uuid.uuid4().hex),
        rdzv_backend="c10d" if nnodes == 1 else "static",
        rdzv_endpoint=rdzv_endpoint,
        rdzv_configs={"rank": node_rank} if nnodes > 1 else {},
        max_restarts=0,
        monitor_interval=0.5,
    )
    values = {**config.__dict__, "extra": {**config.extra, "resume": resume}}
    elastic_launch(launch_config, worker_main)(values)


def frames_from_videos(data: Path, work_dir: Path) -> Path:
    """Finetuning reads frames: videos in `data` are decoded once into work_dir/frames/<name>/."""
    from ..decode import is_video_file, open_source
    from ..encode import FrameFolderSink

    if not data.exists():
        raise DataError(f"{data}: no such file or folder")
    videos = [data] if data.is_file() else sorted(filter(is_video_file, data.iterdir()))
    if not videos:
        return data  # already folders of frames
    target = work_dir / "frames"
    for video in videos:
        folder = target / video.stem
        if folder.is_dir() and any(folder.iterdir()):
            continue
        partial = target / f".{video.stem}.partial"
        sink = FrameFolderSink(partial)
        for frame in open_source(video).frames():
            sink.write(frame.image, frame.pts)
        partial.replace(folder)
    for folder in (p for p in data.iterdir() if p.is_dir()) if data.is_dir() else ():
        link = target / folder.name
        if not link.exists():
            link.symlink_to(folder.resolve(), target_is_directory=True)
    return target


def default_nproc(device: str) -> int:
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 1


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
