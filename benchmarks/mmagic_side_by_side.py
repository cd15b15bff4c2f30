"""Our network beside mmagic's, in one process on the CPU: the same weights, the same frames,
quiet and with a busy process on every core.

    python benchmarks/mmagic_side_by_side.py      # needs mmagic's network and mmcv's DCN importable

Issue 31 measured ours/mmagic 0.79 on a quiet machine and 1.93 on a loaded one (both called from
the main thread). This times mmagic's BasicVSRPlusPlusNet (its own code, mmcv's modulated
deformable convolution) against ours, called as the network alone in the main thread and as
the library (Upscaler.frames, whose network runs in a thread of its own), for PyTorch's
initialisation and mmagic's (the offset heads' last conv at zero); and says how far apart the
two outputs are. mmagic's network asks for low-resolution frames of at least 64x64.
Run by hand; the numbers, with the machine they came from, go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from threads import busy, cpu_name, mmagic_init  # benchmarks/threads.py, beside this script

import vsrpp_cli
from vsrpp_cli.network import BasicVSRPlusPlus
from vsrpp_cli.network.deform_conv import resolve_backend
from vsrpp_cli.quality.bench import scene
from vsrpp_cli.weights.checkpoint import load_model

FRAMES, HEIGHT, WIDTH, MID, BLOCKS, ROUNDS = 8, 64, 64, 16, 1, 5


def mmagic_network(mid: int, blocks: int) -> torch.nn.Module:
    from mmagic.models.editors.basicvsr_plusplus_net.basicvsr_plusplus_net import BasicVSRPlusPlusNet

    return BasicVSRPlusPlusNet(mid_channels=mid, num_blocks=blocks)


def weights(folder: Path) -> dict[str, Path]:
    """Official-layout checkpoints (`generator.` keys), as mmagic saves them."""
    torch.manual_seed(0)
    state = BasicVSRPlusPlus(MID, BLOCKS).state_dict()
    variants = {
        "PyTorch's init": state,
        "mmagic's init": mmagic_init(state),
    }
    paths = {}
    for name, variant in variants.items():
        paths[name] = folder / f"{len(paths)}.pth"
        torch.save({"state_dict": {f"generator.{k}": v for k, v in variant.items()}}, paths[name])
    return paths


def best_seconds(calls: dict[str, Callable[[], object]], rounds: int = ROUNDS) -> dict[str, float]:
    """The best of `rounds` for each call, the calls taken in turn within each round, so that a
    load that changes over the minute weighs on all of them alike."""
    for call in calls.values():
        call()  # warm-up
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, call in calls.items():
            began = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - began)
    return best


def no_grad(module: torch.nn.Module, clip: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.no_grad():
            return module(clip)

    return call


def measure(path: Path, clip: torch.Tensor, frames: list[np.ndarray]) -> dict[str, float]:
    state = {k.removeprefix("generator."): v for k, v in torch.load(path, weights_only=True)["state_dict"].items()}
    theirs = mmagic_network(MID, BLOCKS).eval()
    theirs.load_state_dict(state)
    ours = load_model(path).eval()
    upscaler = vsrpp_cli.Upscaler(weights=path, device="cpu", chunk_frames=FRAMES, chunk_overlap=0)
    with torch.no_grad():
        difference = float((theirs(clip) - ours(clip)).abs().max())
    row = {"max |ours - mmagic|": difference}
    for machine in ("quiet", "busy"):
        spinners = []
        if machine == "busy":
            spinners = [multiprocessing.Process(target=busy, daemon=True) for _ in range(os.cpu_count() or 1)]
            for spinner in spinners:
                spinner.start()
        try:
            calls = {"mmagic": no_grad(theirs, clip), "ours": no_grad(ours, clip),
                     "library": lambda: list(upscaler.frames(frames))}  # fmt: skip
            row.update({f"{name}, {machine}": seconds for name, seconds in best_seconds(calls).items()})
        finally:
            for spinner in spinners:
                spinner.kill()
    return row


def main() -> None:
    frames = list(scene(FRAMES, HEIGHT, WIDTH))
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    backend = resolve_backend("auto", torch.device("cpu"), torch.float32)
    print(f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"our deformable-conv backend: {backend}; {FRAMES} frames of {HEIGHT}x{WIDTH}, C{MID}/N{BLOCKS}, "
          f"best of {ROUNDS}\n")  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="vsrpp-mmagic-"))
    rows = {name: measure(path, clip, frames) for name, path in weights(folder).items()}
    columns = list(next(iter(rows.values())))
    ratios = ["ours/mmagic quiet", "ours/mmagic busy", "mmagic busy/quiet", "ours busy/quiet"]
    print("| weights | " + " | ".join(columns + ratios) + " |")
    print("|---" * (len(columns) + 5) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:.2e}" if c.startswith("max") else f"{row[c]:.2f} s" for c in columns]
        ratios = (row["ours, quiet"] / row["mmagic, quiet"], row["ours, busy"] / row["mmagic, busy"],
                  row["mmagic, busy"] / row["mmagic, quiet"], row["ours, busy"] / row["ours, quiet"])  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()
