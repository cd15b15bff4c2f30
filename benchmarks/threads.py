"""The network's speed by calling thread, quiet and loaded, and where denormal floats arise.

    python benchmarks/threads.py            # a markdown table for benchmarks/RESULTS.md

Issue 31 measured the library 5-12x slower from a program's main thread than from a worker
thread, and traced it to denormals. This runs the same call (Upscaler.frames, 8 frames of 48x64,
C16/N1 with PyTorch's default initialisation) from the main thread and from a thread, through
`vsrpp upscale` (a process), and the old way (the network called in the caller's own thread, as
the engine did before it had a thread of its own), on a quiet machine and with a busy process
on every core; and counts the denormal values each operator of a forward produces, for PyTorch's
initialisation, mmagic's (the offset heads' last conv at zero) and random official-layout weights.
Run by hand; numbers with the machine they came from go to RESULTS.md.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import vsrpp_cli
from vsrpp_cli.network import BasicVSRPlusPlus
from vsrpp_cli.quality.bench import scene

FRAMES, HEIGHT, WIDTH = 8, 48, 64
TINY = torch.finfo(torch.float32).tiny


def decayed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint whose propagation branches' residual blocks have decayed (as weight decay
    leaves unused channels of a trained network): the branch's input conv and its blocks' first
    convs scaled by 1e-20 (biases at zero), so that the first convs' outputs fall below 1.2e-38.
    Synthetic: no trained checkpoint here shows it; this shows a CPU's denormal penalty at will."""
    scaled = dict(state)
    for key, value in state.items():
        if key.startswith("backbone.") and (".main.0." in key or ".conv1." in key):
            scaled[key] = value * 1e-20 if key.endswith("weight") else torch.zeros_like(value)
    return scaled


def mmagic_init(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmagic's initialisation of the offset heads: their last conv at zero (init_offset)."""
    return {k: (torch.zeros_like(v) if ".conv_offset.6." in k else v) for k, v in state.items()}


def checkpoints(folder: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    pytorch_init = BasicVSRPlusPlus(16, 1).state_dict()
    paths = {}
    variants = (
        ("pytorch init", pytorch_init),
        ("mmagic init", mmagic_init(pytorch_init)),
        ("decayed (synthetic)", decayed(pytorch_init)),
    )
    for name, state in variants:
        paths[name] = folder / f"{len(paths)}.pth"
        torch.save({"state_dict": state}, paths[name])
    return paths


def flushing_changes(weights: Path) -> float:
    """The largest change flushing denormals makes to an output frame (each forward in a fresh
    thread, whose OpenMP threads start from its setting)."""
    from vsrpp_cli.weights.checkpoint import load_model

    model = load_model(weights).eval()
    clip = torch.from_numpy(np.stack(frames())).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    outputs = {}

    def forward(flush: bool) -> None:
        torch.set_flush_denormal(flush)
        with torch.no_grad():
            outputs[flush] = model(clip)

    for flush in (False, True):
        thread = threading.Thread(target=forward, args=(flush,))
        thread.start()
        thread.join()
    return float((outputs[True] - outputs[False]).abs().max())


def cpu_name() -> str:
    return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor())  # fmt: skip


def frames() -> list[np.ndarray]:
    return list(scene(FRAMES, HEIGHT, WIDTH))


def timed(call) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def in_a_thread(call) -> float:
    out: list[float] = []
    thread = threading.Thread(target=lambda: out.append(timed(call)))
    thread.start()
    thread.join()
    return out[0]


def the_old_way(upscaler: vsrpp_cli.Upscaler, clip: list[np.ndarray]) -> None:
    """The network in the caller's thread, as the engine ran it before (engine._forward)."""
    from vsrpp_cli.video.tensors import frames_to_tensor

    engine = upscaler.engine
    engine._forward(frames_to_tensor(clip, engine.device, engine.dtype), False)


def cli_seconds(weights: Path, folder: Path) -> float:
    video = folder / "in.mkv"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "bgr0"
        for rgb in frames():
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    command = [sys.executable, "-m", "vsrpp_cli", "upscale", str(video), str(folder / "out.mkv"), "--weights",
               str(weights), "--device", "cpu", "--chunk-frames", "8", "--chunk-overlap", "0", "--overwrite", "--json",
               "-q"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)["seconds"]


def busy() -> None:
    while True:
        pass


def speeds(weights: Path, folder: Path, loaded: bool) -> dict[str, float]:
    spinners = []
    if loaded:
        spinners = [multiprocessing.Process(target=busy, daemon=True) for _ in range(os.cpu_count() or 1)]
        for spinner in spinners:
            spinner.start()
    try:
        upscaler = vsrpp_cli.Upscaler(weights=weights, device="cpu", chunk_frames=FRAMES, chunk_overlap=0)
        clip = frames()
        list(upscaler.frames(clip))  # warm-up
        best = {}
        for _ in range(2):
            for name, seconds in (
                ("main thread", timed(lambda: list(upscaler.frames(clip)))),
                ("a thread", in_a_thread(lambda: list(upscaler.frames(clip)))),
                ("old way, main thread", timed(lambda: the_old_way(upscaler, clip))),
                ("old way, a thread", in_a_thread(lambda: the_old_way(upscaler, clip))),
                ("vsrpp upscale (process)", cli_seconds(weights, folder)),
            ):
                best[name] = min(best.get(name, float("inf")), seconds)
        return best
    finally:
        for spinner in spinners:
            spinner.kill()


class DenormalCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.values = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                self.values += tensor.numel()
                found = int(((tensor != 0) & (tensor.abs() < TINY)).sum())
                if found:
                    self.counts[str(func)] = self.counts.get(str(func), 0) + found
        return out


def denormals(weights: Path) -> tuple[int, int, dict[str, int]]:
    from vsrpp_cli.weights.checkpoint import load_model

    model = load_model(weights).eval()
    clip = torch.from_numpy(np.stack(frames())).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    counter = DenormalCounter()
    with torch.no_grad(), counter:
        model(clip)
    return sum(counter.counts.values()), counter.values, counter.counts


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="vsrpp-threads-"))
    paths = checkpoints(folder)
    print(f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads\n")
    print("| weights | denormal values in a forward | of all values | where | largest change by flushing |")
    print("|---|---|---|---|---|")
    for name, path in paths.items():
        found, total, where = denormals(path)
        places = ", ".join(f"{op} {n}" for op, n in sorted(where.items(), key=lambda kv: -kv[1])[:3]) or "none"
        print(f"| {name} | {found:,} | {total:,} | {places} | {flushing_changes(path):.1e} |")
    ways = ["main thread", "a thread", "old way, main thread", "old way, a thread", "vsrpp upscale (process)"]
    print("\n| weights | machine | " + " | ".join(ways) + " |")
    print("|---|---|---|---|---|---|---|")
    for name, path in paths.items():
        for loaded in (False, True):
            result = speeds(path, folder, loaded)
            cells = " | ".join(f"{seconds:.2f} s" for seconds in result.values())
            print(f"| {name} | {'busy' if loaded else 'quiet'} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
