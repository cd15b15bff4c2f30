"""The training recipe: the official REDS4 one by default (docs/REFERENCE.md section 3, mmagic's
basicvsr-pp_c64n7_8xb1-600k_reds4), every value changeable by a flag or a JSON config file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError

REDS4_CLIPS = ("000", "011", "015", "020")


@dataclass
class TrainConfig:
    work_dir: str = "runs/reds4"
    data_root: str = "data/REDS"
    dataset: str = "reds"  # "reds", or "folders" for finetuning on the user's own footage
    degradation: str = "bicubic"  # finetune: how the low-quality side is made (bicubic, blur, compress)
    compress_codec: str = "libx264"
    compress_crf: int = 32
    init_from: str = ""  # a checkpoint to start from (finetune); empty: random init
    spynet: str = ""  # SPyNet weights; empty: the official SPyNet from the zoo
    iters: int = 600_000
    num_frames: int = 30
    patch_size: int = 256  # ground-truth crop; the low-quality crop is patch_size / scale
    batch_size: int = 1  # per process
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    spynet_lr_mult: float = 0.25
    fix_iter: int = 5000  # SPyNet frozen for this many iterations
    eta_min: float = 1e-7  # cosine annealing floor
    mid_channels: int = 64
    num_blocks: int = 7
    is_low_res_input: bool = True
    hr_channels: int = 64  # the full-size convs' width (network/basicvsrpp.py); 64 upstream
    val_interval: int = 5000
    val_clips: tuple[str, ...] = REDS4_CLIPS
    save_interval: int = 5000
    log_interval: int = 100
    seed: int = 0
    amp: str = "off"  # off, fp16, bf16
    workers: int = 4  # data-loading processes per training process
    device: str = "auto"  # auto, cuda, cpu
    stop_after: int = 0  # stop this run after N iterations (for time-limited jobs); 0: run to the end
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> int:
        return 4 if self.is_low_res_input else 1

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise UsageError(f"--config {path}: not a readable JSON file of settings ({error})") from None
        if not isinstance(values, dict):
            raise UsageError(f'--config {path}: give a JSON object of settings, e.g. {{"iters": 1000}}')
        return cls().updated(values)

    @classmethod
    def from_sources(cls, config_file: Path | None, flags: dict[str, Any]) -> TrainConfig:
        """Flags the user gave win; what they did not give comes from the file, then from the
        recipe's defaults. A flag not given is None."""
        start = cls.load(config_file) if config_file else cls()
        return start.updated(flags)

    @classmethod
    def finetune(cls, init_from: Path, frames_root: Path, work_dir: Path, arch: dict[str, Any], **recipe: Any):
        """Finetuning: the user's footage in folders, the checkpoint's architecture, SPyNet
        trained from the start (no frozen phase), no REDS4 validation; `recipe` as given."""
        x4 = arch["is_low_res_input"]
        base = cls(
            dataset="folders",
            data_root=str(frames_root),
            work_dir=str(work_dir),
            init_from=str(init_from),
            degradation="bicubic" if x4 else "compress",
            fix_iter=0,
            val_interval=0,
            **arch,
        )
        return base.updated(recipe)

    def updated(self, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown training settings: {', '.join(unknown)}; `vsrpp train --help` lists them")
        merged = {**asdict(self), **{k: v for k, v in values.items() if v is not None}}
        merged["betas"] = tuple(merged["betas"])
        merged["val_clips"] = tuple(merged["val_clips"])
        return TrainConfig(**merged)
