"""`vsrpp eval`: the standard test sets under the official protocol (docs/REFERENCE.md section 4).

Each clip runs as one sequence (unless windows or tiles are asked for, to measure what they
cost), outputs are clamped and rounded to 8 bits as saved images would be, PSNR and SSIM are
taken per frame, averaged per clip, then over clips. Folder layouts follow mmagic's dataset
configs (data/REDS, data/Vid4, data/UDM10, data/vimeo90k).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EvalError, InputError, UsageError
from ..network.basicvsrpp import BRANCHES
from ..run.engine import PRECISIONS, Engine
from ..run.windows import temporal_windows
from ..train.config import REDS4_CLIPS
from ..video.images import frame_files, read_image
from ..video.tensors import tensor_to_frames
from .metrics import psnr, ssim


@dataclass(frozen=True)
class Dataset:
    name: str
    score_key: str  # the column of the published scores (zoo.SCORE_SETS)
    default_root: str
    lq: str  # sub-folders of the data root
    gt: str
    y_channel: bool
    clips: tuple[str, ...] = ()  # fixed clip list; empty: every clip found
    centre_frame_only: bool = False  # Vimeo-90K-T: 7 frames in, the 4th scored, mirror-extended


DATASETS = {
    d.name.lower(): d
    for d in (
        Dataset("REDS4", "REDS4", "data/REDS", "train_sharp_bicubic/X4", "train_sharp", False, REDS4_CLIPS),
        Dataset("Vid4-BI", "Vid4 BI", "data/Vid4", "BIx4", "GT", True),
        Dataset("Vid4-BD", "Vid4 BD", "data/Vid4", "BDx4", "GT", True),
        Dataset("UDM10-BD", "UDM10 BD", "data/UDM10", "BDx4", "GT", True),
        Dataset("Vimeo-90K-T-BI", "Vimeo-90K-T BI", "data/vimeo90k", "BIx4", "GT", True, centre_frame_only=True),
        Dataset("Vimeo-90K-T-BD", "Vimeo-90K-T BD", "data/vimeo90k", "BDx4", "GT", True, centre_frame_only=True),
    )
}
VIMEO_LIST = "meta_info_Vimeo90K_test_GT.txt"


@dataclass
class ClipScore:
    clip: str
    frames: int
    psnr: float
    ssim: float
    frame_psnrs: list[float] = field(default_factory=list)  # (a perfect frame: 100, as the average)


@dataclass
class Report:
    dataset: str
    y_channel: bool
    clips: list[ClipScore] = field(default_factory=list)
    published: str | None = None  # "PSNR/SSIM" of the model's paper row, when known

    @property
    def psnr(self) -> float:
        return float(np.mean([c.psnr for c in self.clips]))

    @property
    def ssim(self) -> float:
        return float(np.mean([c.ssim for c in self.clips]))

    def as_dict(self) -> dict:
        facts = {
            "dataset": self.dataset,
            "channel": "Y" if self.y_channel else "RGB",
            "psnr": self.psnr,
            "ssim": self.ssim,
            "clips": [c.__dict__ for c in self.clips],
        }
        if self.published:
            published_psnr, published_ssim = (float(v) for v in self.published.split("/"))
            facts.update(
                published_psnr=published_psnr,
                published_ssim=published_ssim,
                psnr_difference=self.psnr - published_psnr,
                ssim_difference=self.ssim - published_ssim,
            )
        return facts


@dataclass
class EvalPlan:
    """What `vsrpp eval` scores: a standard set under its protocol, or a custom --lq/--gt pair."""

    name: str
    clips: list[tuple[str, Path, Path]]
    y_channel: bool
    centre_frame_only: bool = False
    dataset: Dataset | None = None

    @classmethod
    def make(
        cls, dataset: str | None, data_root: Path | None, lq: Path | None, gt: Path | None, y_channel: bool
    ) -> EvalPlan:
        if (dataset is None) == (lq is None and gt is None):
            raise UsageError("give either --dataset NAME or --lq DIR --gt DIR")
        if dataset is not None:
            spec = get_dataset(dataset)
            clips = dataset_clips(spec, data_root or Path(spec.default_root))
            return cls(spec.name, clips, spec.y_channel, spec.centre_frame_only, spec)
        if lq is None or gt is None:
            raise UsageError("--lq and --gt go together")
        return cls(f"{lq} vs {gt}", paired_clips(lq, gt), y_channel)


def score(
    plan: EvalPlan,
    weights: Path,
    engine: Engine,
    chunk_frames: int = 0,
    chunk_overlap: int = 0,
    crop_border: int = 0,
    on_clip: Callable[[ClipScore], None] = lambda score: None,
) -> tuple[Report, dict]:
    """Score the plan's clips; the report, and its facts with the settings and the published
    numbers beside ours when the weights are a zoo model's."""
    from ..weights import zoo
    from ..weights.hashing import sha256_of

    known = zoo.known_file(sha256_of(weights))

    def upscale_clip(lq: list[np.ndarray]) -> list[np.ndarray]:
        if plan.centre_frame_only:
            return [centre_output(engine, lq)]
        return run_clip(engine, lq, chunk_frames or len(lq), chunk_overlap)

    report = evaluate(plan.clips, upscale_clip, plan.name, plan.y_channel, plan.centre_frame_only, crop_border, on_clip)
    if plan.dataset is not None and known is not None:
        report.published = known.scores.get(plan.dataset.score_key)
    facts = report.as_dict()
    facts.update(
        weights=str(weights),
        zoo_model=known.name if known else None,
        device=str(engine.device),
        precision=next(name for name, value in PRECISIONS.items() if value == engine.dtype),
        chunk_frames=chunk_frames,
        chunk_overlap=chunk_overlap,
        tile=engine.tile,
        crop_border=crop_border,
        strength=engine.strength,
        deform_backend=engine.model.deform_align[BRANCHES[0]].backend,  # what the asked-for one resolved to
    )
    return report, facts


def get_dataset(name: str) -> Dataset:
    if name.lower() not in DATASETS:
        names = ", ".join(d.name for d in DATASETS.values())
        raise EvalError(f"no dataset named {name!r}; choose one of {names}, or give --lq DIR --gt DIR")
    return DATASETS[name.lower()]


def dataset_clips(dataset: Dataset, root: Path) -> list[tuple[str, Path, Path]]:
    """(name, LQ folder, GT folder) for every clip, after checking they are all there."""
    lq_root, gt_root = root / dataset.lq, root / dataset.gt
    missing = [str(p) for p in (lq_root, gt_root) if not p.is_dir()]
    if missing:
        raise EvalError(f"{dataset.name} needs {' and '.join(missing)}; check --data-root (layout as mmagic's)")
    if dataset.clips:
        names = list(dataset.clips)
    elif dataset.centre_frame_only and (root / VIMEO_LIST).is_file():
        names = [line.split()[0] for line in (root / VIMEO_LIST).read_text().splitlines() if line.strip()]
    elif dataset.centre_frame_only:
        names = sorted(f"{a.name}/{b.name}" for a in gt_root.iterdir() if a.is_dir() for b in a.iterdir() if b.is_dir())
    else:
        names = sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    clips = [(name, lq_root / name, gt_root / name) for name in names]
    absent = [str(folder) for _, lq, gt in clips for folder in (lq, gt) if not folder.is_dir()]
    if absent:
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        raise EvalError(f"{dataset.name} needs {', '.join(absent[:3])}{more}")
    if not clips:
        raise EvalError(f"{gt_root}: no clips (sub-folders of frames) found")
    return clips


def paired_clips(lq_root: Path, gt_root: Path) -> list[tuple[str, Path, Path]]:
    """--lq/--gt: folders of clip folders, matched by name, or two folders of frames."""
    for folder in (lq_root, gt_root):
        if not folder.is_dir():
            raise EvalError(f"{folder}: no such folder")
    subfolders = sorted(p.name for p in lq_root.iterdir() if p.is_dir())
    if not subfolders:
        return [(lq_root.name, lq_root, gt_root)]
    absent = [name for name in subfolders if not (gt_root / name).is_dir()]
    if absent:
        raise EvalError(f"{gt_root} lacks the clips {', '.join(absent[:3])} that {lq_root} has")
    return [(name, lq_root / name, gt_root / name) for name in subfolders]


def evaluate(
    clips: list[tuple[str, Path, Path]],
    upscale_clip: Callable[[list[np.ndarray]], list[np.ndarray]],
    name: str,
    y_channel: bool,
    centre_frame_only: bool = False,
    crop_border: int = 0,
    on_clip: Callable[[ClipScore], None] = lambda score: None,
) -> Report:
    """The protocol, whatever makes the outputs (`vsrpp eval`'s engine, training's validation):
    each clip's LQ frames in, 8-bit outputs back, PSNR and SSIM per frame, averaged per clip.
    With `centre_frame_only` the clip gives one output, scored against the centre GT frame."""
    report = Report(name, y_channel)
    for clip, lq_folder, gt_folder in clips:
        lq, gt = load_frames(lq_folder), load_frames(gt_folder)
        if centre_frame_only:
            gt = [gt[len(gt) // 2]]
        elif len(lq) != len(gt):
            raise EvalError(f"{clip}: {len(lq)} LQ frames but {len(gt)} GT frames")
        outputs = upscale_clip(lq)
        for out, truth in zip(outputs, gt, strict=True):
            if out.shape != truth.shape:
                scale = out.shape[0] // max(1, lq[0].shape[0])
                raise EvalError(
                    f"{clip}: output is {out.shape[1]}x{out.shape[0]}, GT {truth.shape[1]}x{truth.shape[0]}"
                    f"; is this the right model (x{scale}) for the data?"
                )
        psnrs = [psnr(o, g, y_channel, crop_border) for o, g in zip(outputs, gt, strict=True)]
        ssims = [ssim(o, g, y_channel, crop_border) for o, g in zip(outputs, gt, strict=True)]
        score = ClipScore(
            clip, len(outputs), float(np.mean(psnrs)), float(np.mean(ssims)), [min(float(p), 100.0) for p in psnrs]
        )
        if math.isinf(score.psnr):
            score.psnr = 100.0  # identical images: report a finite ceiling
        report.clips.append(score)
        on_clip(score)
    return report


def run_clip(engine: Engine, frames: list[np.ndarray], chunk: int, overlap: int) -> list[np.ndarray]:
    outputs: list[np.ndarray] = []
    for window in temporal_windows(frames, chunk, overlap):
        outputs.extend(engine.upscale(window.items, window.keep, bit_depth=8))
    return outputs


def centre_output(engine: Engine, frames: list[np.ndarray]) -> np.ndarray:
    """Vimeo-90K-T: the 7 frames mirror-extended to 14; the centre frame appears twice and its two
    outputs are averaged before rounding (docs/REFERENCE.md section 4)."""
    out = engine.infer(frames + frames[::-1], mirrored=True)
    t = len(frames)
    centre = t // 2
    average = 0.5 * (out[:, centre] + out[:, 2 * t - 1 - centre])
    return tensor_to_frames(average[:, None], bit_depth=8)[0]


def load_frames(folder: Path) -> list[np.ndarray]:
    try:
        frames = [read_image(path) for path in frame_files(folder)]
    except InputError as error:
        raise EvalError(str(error)) from None
    if any(f.dtype != np.uint8 for f in frames):
        raise EvalError(f"{folder}: the protocol scores 8-bit frames; these are 16-bit")
    return frames
