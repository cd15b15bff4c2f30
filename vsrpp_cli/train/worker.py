"""One training process: DistributedDataParallel over NCCL (GPUs) or gloo (CPU).

Started by launch.py through torch.distributed's elastic launcher, which sets RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Rank 0 logs, validates and saves.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .. import __version__
from ..network import BasicVSRPlusPlus
from ..quality.evaluate import evaluate
from ..run.threads import use_threads
from ..video.tensors import frames_to_tensor, tensor_to_frames
from ..weights.checkpoint import load_strict, read_checkpoint
from .config import TrainConfig
from .data import ClipSamples, SampleNumbers, folder_clips, reds_clips

AMP = {"fp16": torch.float16, "bf16": torch.bfloat16}


def charbonnier(output: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return torch.sqrt((output - target) ** 2 + eps).mean()


def trains_on_cuda(device: str) -> bool:
    """--device cuda, or auto where CUDA is here: the one place training decides its device."""
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def main(config_dict: dict) -> None:
    config = TrainConfig().updated(config_dict)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    # This process is ours: its main thread flushes denormals before its first parallel op, so
    # every OpenMP thread it starts does too (threads.NetworkThread says why); gradients decay
    # into them.
    torch.set_flush_denormal(True)
    use_threads(processes=int(os.environ.get("LOCAL_WORLD_SIZE", 1)))  # the machine's cores, shared
    use_cuda = trains_on_cuda(config.device)
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        Trainer(config, rank, world, device).run()
    finally:
        dist.destroy_process_group()


class Trainer:
    def __init__(self, config: TrainConfig, rank: int, world: int, device: torch.device) -> None:
        self.config, self.rank, self.world, self.device = config, rank, world, device
        self.work_dir = Path(config.work_dir)
        if config.dataset == "reds":
            self.train_clips, self.val_clips = reds_clips(config)
        else:
            self.train_clips, self.val_clips = folder_clips(config), []
        torch.manual_seed(config.seed)  # the same initial weights on every process
        self.model = BasicVSRPlusPlus(
            config.mid_channels,
            config.num_blocks,
            is_low_res_input=config.is_low_res_input,
            hr_channels=config.hr_channels,
        ).to(device)
        self._initial_weights()
        spynet = list(self.model.spynet.parameters())
        others = [p for name, p in self.model.named_parameters() if not name.startswith("spynet.")]
        self.optimizer = torch.optim.Adam(
            [{"params": others, "lr": config.lr}, {"params": spynet, "lr": config.lr * config.spynet_lr_mult}],
            betas=config.betas,
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, config.iters, config.eta_min)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
        self.iteration, self.best_psnr = 0, -math.inf
        self._resume_if_asked()
        self.ddp = self._wrap()

    # ------------------------------------------------------------------ setup
    def _initial_weights(self) -> None:
        c = self.config
        if c.init_from:
            checkpoint = read_checkpoint(c.init_from)
            load_strict(self.model, checkpoint.state_dict, c.init_from)
            return
        if c.spynet:
            state = read_checkpoint(c.spynet).state_dict
            state = {k.removeprefix("spynet."): v for k, v in state.items()}
            own = self.model.spynet.state_dict()
            state = {**{k: own[k] for k in ("mean", "std") if k not in state}, **state}
            load_strict(self.model.spynet, state, c.spynet)

    def _resume_if_asked(self) -> None:
        state_file = self.work_dir / "latest.state.pth"
        if not self.config.extra.get("resume") or not state_file.exists():
            return
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        weights = read_checkpoint(self.work_dir / "latest.pth")
        load_strict(self.model, weights.state_dict, self.work_dir / "latest.pth")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.best_psnr = state["iteration"], state["best_psnr"]
        torch.set_rng_state(state["torch_rng"][self.rank % len(state["torch_rng"])])

    def _wrap(self) -> DistributedDataParallel:
        """DDP over the parameters that train now: SPyNet is frozen for the first fix_iter
        iterations (excluded from DDP), then rejoins (DDP is rebuilt)."""
        frozen = self.iteration < self.config.fix_iter
        self.model.spynet.requires_grad_(not frozen)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        c = self.config
        sampler = SampleNumbers(self.iteration, self.rank, self.world, c.batch_size)
        loader = DataLoader(
            ClipSamples(self.train_clips, c),
            batch_size=c.batch_size,
            sampler=sampler,
            num_workers=c.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=c.workers > 0,
        )
        stop = c.iters if not c.stop_after else min(c.iters, self.iteration + c.stop_after)
        started, started_iteration = time.perf_counter(), self.iteration
        window_loss, window_count = 0.0, 0
        for lq, gt in loader:
            if self.iteration >= stop:
                break
            if self.iteration == c.fix_iter and c.fix_iter > 0:
                self.ddp = self._wrap()
            loss = self.step(lq.to(self.device, non_blocking=True), gt.to(self.device, non_blocking=True))
            self.iteration += 1
            window_loss += loss
            window_count += 1
            if self.iteration % c.log_interval == 0 or self.iteration == stop:
                self.log_progress(window_loss / window_count, started, started_iteration)
                window_loss, window_count = 0.0, 0
            if c.val_interval and self.iteration % c.val_interval == 0 and self.val_clips:
                self.validate()
            if self.iteration % c.save_interval == 0 or self.iteration == stop:
                self.save()
        dist.barrier()

    def step(self, lq: torch.Tensor, gt: torch.Tensor) -> float:
        c = self.config
        self.ddp.train()
        with torch.autocast(self.device.type, dtype=AMP.get(c.amp, torch.float32), enabled=c.amp in AMP):
            loss = charbonnier(self.ddp(lq).float(), gt)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        return mean.item() / self.world

    # ------------------------------------------------------------------ reporting
    def log(self, record: dict) -> None:
        if self.rank != 0:
            return
        record = {"iter": self.iteration, "world_size": self.world, "torch_threads": torch.get_num_threads(), **record}
        print(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)
        with open(self.work_dir / "train_log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")

    def log_progress(self, loss: float, started: float, started_iteration: int) -> None:
        elapsed = time.perf_counter() - started
        done = self.iteration - started_iteration
        rate = done / elapsed if elapsed else 0.0
        samples = rate * self.world * self.config.batch_size
        eta = (self.config.iters - self.iteration) / rate if rate else math.inf
        self.log(
            {
                "loss": loss,
                "lr": self.scheduler.get_last_lr()[0],
                "it_per_s": round(rate, 4),
                "samples_per_s": round(samples, 4),
                "eta_s": round(eta) if math.isfinite(eta) else None,
            }
        )

    @torch.no_grad()
    def validate(self) -> None:
        """REDS4 under the evaluation protocol (quality/evaluate.py), each clip as one sequence (rank 0)."""
        if self.rank == 0:
            self.model.eval()

            def upscale_clip(lq: list[np.ndarray]) -> list[np.ndarray]:
                with torch.no_grad():
                    return tensor_to_frames(self.model(frames_to_tensor(lq, self.device, torch.float32)), 8)

            report = evaluate(self.val_clips, upscale_clip, "REDS4", y_channel=False)
            if report.psnr > self.best_psnr:
                self.best_psnr = report.psnr
                self._save_weights(self.work_dir / "best.pth")
            self.log(
                {"val_psnr": report.psnr, "val_ssim": report.ssim, "val_clips": {c.clip: c.psnr for c in report.clips}}
            )
        dist.barrier()

    # ------------------------------------------------------------------ checkpoints
    def _save_weights(self, path: Path) -> None:
        """The official layout: mmagic and `vsrpp upscale --weights` load it as it is."""
        state = {f"generator.{k}": v.detach().cpu() for k, v in self.model.state_dict().items()}
        state["step_counter"] = torch.tensor([float(self.iteration)])
        meta = {
            "iter": self.iteration,
            "vsrpp_version": __version__,
            "config": json.dumps(self.config.__dict__, default=list),
        }
        tmp = path.with_suffix(".tmp")
        torch.save({"meta": meta, "state_dict": state}, tmp)
        tmp.replace(path)

    def save(self) -> None:
        gathered = [None] * self.world
        dist.all_gather_object(gathered, torch.get_rng_state())
        if self.rank == 0:
            self._save_weights(self.work_dir / f"iter_{self.iteration}.pth")
            self._save_weights(self.work_dir / "latest.pth")
            state = {
                "iteration": self.iteration,
                "best_psnr": self.best_psnr,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "torch_rng": gathered,
            }
            tmp = self.work_dir / "latest.state.tmp"
            torch.save(state, tmp)
            tmp.replace(self.work_dir / "latest.state.pth")
        dist.barrier()
