"""The training recipe: the official REDS4 one by default (docs/REFERENCE.md section 3, mmagic's
basicvsr-pp_c64n7_8xb1-600k_reds4), every value changeable by a flag or a JSON config file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

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
        return cls().updated(json.loads(Path(path).read_text()))

    def updated(self, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        merged = {**asdict(self), **{k: v for k, v in values.items() if v is not None}}
        merged["betas"] = tuple(merged["betas"])
        merged["val_clips"] = tuple(merged["val_clips"])
        return TrainConfig(**merged)
