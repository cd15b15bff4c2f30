"""Training samples: clips of consecutive frames, random crops, flips and transposes.

Every sample is a pure function of (seed, sample number): any worker process can make it, and
a resumed run draws exactly the samples the uninterrupted run would have drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from ..errors import DataError
from ..video.images import frame_files, read_image
from ..video.tensors import frames_to_tensor
from .config import TrainConfig


def reds_clips(config: TrainConfig) -> tuple[list[tuple[Path, Path, list[str]]], list[tuple[str, Path, Path]]]:
    """(training clips as (LQ folder, GT folder, frame names), REDS4 clips for validation)."""
    root = Path(config.data_root)
    gt_root, lq_root = root / "train_sharp", root / "train_sharp_bicubic" / "X4"
    missing = [str(p) for p in (gt_root, lq_root) if not p.is_dir()]
    if missing:
        raise DataError(
            f"the REDS layout needs {' and '.join(missing)} (see REFERENCE: train_sharp, train_sharp_bicubic/X4)"
        )
    train = []
    for gt_dir in sorted(p for p in gt_root.iterdir() if p.is_dir() and p.name not in config.val_clips):
        lq_dir = lq_root / gt_dir.name
        if not lq_dir.is_dir():
            raise DataError(f"{lq_dir} is missing (the low-resolution frames of clip {gt_dir.name})")
        names = [p.name for p in frame_files(gt_dir)]
        absent = [n for n in names if not (lq_dir / n).is_file()]
        if absent:
            raise DataError(f"{lq_dir} lacks {absent[0]}" + (f" and {len(absent) - 1} more" if len(absent) > 1 else ""))
        if len(names) >= config.num_frames:
            train.append((lq_dir, gt_dir, names))
    if not train:
        raise DataError(f"{gt_root}: no training clip (outside REDS4) with at least {config.num_frames} frames")
    val = []
    if config.val_interval > 0:
        for clip in config.val_clips:
            pair = (lq_root / clip, gt_root / clip)
            absent = [str(p) for p in pair if not p.is_dir()]
            if absent:
                raise DataError(f"validation needs {' and '.join(absent)} (REDS4; or --val-interval 0)")
            val.append((clip, *pair))
    return train, val


def folder_clips(config: TrainConfig) -> list[tuple[Path | None, Path, list[str]]]:
    """Finetuning data: sub-folders of frames (or videos, decoded once into a cache) under
    data_root; with `GT/` and `LQ/` sub-folders the pairs are used as they are."""
    root = Path(config.data_root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    paired = (root / "GT").is_dir() and (root / "LQ").is_dir()
    gt_root = root / "GT" if paired else root
    clips = []
    for gt_dir in sorted(p for p in gt_root.iterdir() if p.is_dir()):
        names = [p.name for p in frame_files(gt_dir)]
        if len(names) >= config.num_frames:
            clips.append((root / "LQ" / gt_dir.name if paired else None, gt_dir, names))
    if not clips:
        raise DataError(f"{gt_root}: no folder of at least {config.num_frames} frames to learn from")
    for _, gt_dir, names in clips:  # a crop larger than the frames cannot be taken
        height, width = read_image(gt_dir / names[0]).shape[:2]
        if config.patch_size > min(height, width):
            raise DataError(
                f"--patch-size {config.patch_size} is larger than the frames of {gt_dir.name} ({width}x{height}); "
                f"give --patch-size {min(height, width) // 4 * 4} or less"
            )
    return clips


class ClipSamples(Dataset):
    """Sample n: a random clip, num_frames consecutive frames from a random start, a random
    crop (patch_size on the GT side), then flips and a transpose, each with probability 1/2."""

    def __init__(self, clips: list, config: TrainConfig) -> None:
        self.clips, self.config = clips, config

    def __len__(self) -> int:
        return 1 << 62  # sample numbers come from the sampler

    def __getitem__(self, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        rng = np.random.default_rng([c.seed, number])
        lq_dir, gt_dir, names = self.clips[rng.integers(len(self.clips))]
        start = rng.integers(len(names) - c.num_frames + 1)
        picked = names[start : start + c.num_frames]
        gt = np.stack([read_image(gt_dir / n) for n in picked])  # (t, H, W, 3)
        lq_patch = c.patch_size // c.scale
        if lq_dir is not None:
            lq = np.stack([read_image(lq_dir / n) for n in picked])
            top = rng.integers(lq.shape[1] - lq_patch + 1)
            left = rng.integers(lq.shape[2] - lq_patch + 1)
            lq = lq[:, top : top + lq_patch, left : left + lq_patch]
            gt = gt[:, top * c.scale : top * c.scale + c.patch_size, left * c.scale : left * c.scale + c.patch_size]
            lq_t, gt_t = to_tensor(lq), to_tensor(gt)
        else:  # make the low-quality side from the crop
            top = rng.integers(gt.shape[1] - c.patch_size + 1)
            left = rng.integers(gt.shape[2] - c.patch_size + 1)
            gt_t = to_tensor(gt[:, top : top + c.patch_size, left : left + c.patch_size])
            lq_t = degrade(gt_t, c, rng)
        if rng.random() < 0.5:
            lq_t, gt_t = lq_t.flip(-1), gt_t.flip(-1)
        if rng.random() < 0.5:
            lq_t, gt_t = lq_t.flip(-2), gt_t.flip(-2)
        if rng.random() < 0.5:
            lq_t, gt_t = lq_t.transpose(-1, -2), gt_t.transpose(-1, -2)
        return lq_t.contiguous(), gt_t.contiguous()


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(t, h, w, 3) uint8/uint16 -> (t, 3, h, w) in [0, 1], by the one path frames take (video/tensors.py)."""
    return frames_to_tensor(list(np.ascontiguousarray(frames)), torch.device("cpu"), torch.float32)[0]


def degrade(gt: torch.Tensor, config: TrainConfig, rng: np.random.Generator) -> torch.Tensor:
    """(t, 3, H, W) in [0, 1] -> the low-quality side, as the chosen training degradation."""
    if config.degradation == "bicubic":  # as REDS / Vimeo BI (antialiased bicubic x1/4)
        lq = F.interpolate(gt, scale_factor=1 / config.scale, mode="bicubic", antialias=True, align_corners=False)
    elif config.degradation == "blur":  # as Vimeo BD: Gaussian blur sigma 1.6, then every 4th pixel
        radius = 6
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(x**2) / (2 * 1.6**2))
        g = g / g.sum()
        kernel = torch.outer(g, g).expand(3, 1, -1, -1)
        blurred = F.conv2d(F.pad(gt, (radius,) * 4, mode="replicate"), kernel, groups=3)
        lq = blurred[..., :: config.scale, :: config.scale]
    elif config.degradation == "compress":
        lq = compress(gt, config.compress_codec, config.compress_crf)
    else:
        raise DataError(f"unknown degradation {config.degradation!r}; use bicubic, blur or compress")
    return (lq * 255).round().clamp(0, 255) / 255  # 8-bit, as stored low-quality frames are


def compress(frames: torch.Tensor, codec: str, crf: int) -> torch.Tensor:
    """Round-trip through a real encoder (PyAV, in memory): the artefacts the restoration models
    are trained to remove."""
    import io

    import av

    rgb = (frames.permute(0, 2, 3, 1) * 255).round().byte().numpy()
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream(codec, rate=25)
        stream.height, stream.width = rgb.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for image in rgb:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return to_tensor(decoded)


class SampleNumbers(Sampler):
    """The sample numbers of one process from iteration `start` on: iteration i, process r,
    batch slot b -> (i * world + r) * batch + b. Endless; the loop decides when to stop."""

    def __init__(self, start: int, rank: int, world: int, batch: int) -> None:
        self.start, self.rank, self.world, self.batch = start, rank, world, batch

    def __iter__(self):
        iteration = self.start
        while True:
            base = (iteration * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)
            iteration += 1

    def __len__(self) -> int:
        return 1 << 62
