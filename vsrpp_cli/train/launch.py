"""Starting training: N processes per machine through torch.distributed's elastic launcher (the
machinery behind `torchrun`), on one machine or several, under SLURM too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import DataError, ResumeError
from ..run.engine import slow_on_this_cpu, slow_precision_advice
from ..run.launch import Launch, run_workers
from ..weights import zoo
from .config import TrainConfig
from .data import folder_clips, reds_clips
from .worker import AMP, trains_on_cuda
from .worker import main as worker_main


def launch(
    config: TrainConfig, where: Launch, resume: bool = False, notice: Callable[[str], None] = lambda message: None
) -> None:
    """Check the data, write the resolved configuration into the work dir, run the workers."""
    where = where.resolved()
    amp = AMP.get(config.amp)
    if amp is not None and not trains_on_cuda(config.device) and slow_on_this_cpu(amp):  # said first: each step pays
        notice(slow_precision_advice(amp, "--amp", "off"))
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
    values = {**config.__dict__, "extra": {**config.extra, "resume": resume}}
    run_workers(where, worker_main, values)


def frames_from_videos(data: Path, work_dir: Path) -> Path:
    """Finetuning reads frames: videos in `data` are decoded once into work_dir/frames/<name>/."""
    from ..video.images import FrameFolderSink
    from ..video.inputs import is_video_file, open_source

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
