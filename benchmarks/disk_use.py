"""How much disk `vsrpp upscale` uses beside its output: the run's folder sampled every 50 ms
while a long clip is upscaled (the figures in the README). Usage, from the repository root:

    python benchmarks/disk_use.py FRAMES HEIGHT WIDTH     # e.g. 480 72 128

Prints JSON: the output's size, the run folder's peak, the most windows it held, and what all
windows would have taken (the largest window times their number).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from media import encode_video, moving_scene
from reference import random_official_checkpoint

from vsrpp_cli.run.pipeline import Options, upscale

CHUNK, OVERLAP = 16, 4


def watch(folder: Path, stop: threading.Event, peak: dict) -> None:
    while not stop.is_set():
        if folder.is_dir():
            files = [p for p in folder.iterdir() if p.is_file()]
            sizes = {}
            for p in files:
                with contextlib.suppress(FileNotFoundError):  # closed and deleted meanwhile
                    sizes[p.name] = p.stat().st_size
            windows = [n for n in sizes if n.startswith("window_") and ".partial" not in n]
            peak["bytes"] = max(peak["bytes"], sum(sizes.values()))
            peak["windows"] = max(peak["windows"], len(windows))
            peak["window_bytes"] = max([peak["window_bytes"], *(sizes[n] for n in windows)])
        time.sleep(0.05)


def main(frames: int, height: int, width: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="vsrpp-disk-"))
    source = encode_video(work / "long.mp4", moving_scene(frames, height, width), audio_channels=2)
    weights = work / "c16n2.pth"
    torch.save(random_official_checkpoint(16, 2, True, 0, hr=64), weights)
    peak = {"bytes": 0, "windows": 0, "window_bytes": 0}
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(work / ".out.mp4.vsrpp-partial", stop, peak))
    watcher.start()
    try:
        summary = upscale(source, work / "out.mp4", Options(weights, chunk_frames=CHUNK, chunk_overlap=OVERLAP))
    finally:
        stop.set()
        watcher.join()
    windows = math.ceil(frames / CHUNK)
    facts = {
        "frames": frames,
        "input": f"{height}x{width}",
        "output_bytes": summary.output_bytes,
        "peak_partial_bytes": peak["bytes"],
        "peak_windows": peak["windows"],
        "windows": windows,
        "largest_window_bytes": peak["window_bytes"],
        "all_windows_estimate_bytes": peak["window_bytes"] * windows,
        "seconds": round(summary.seconds, 1),
    }
    print(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main(*(int(v) for v in sys.argv[1:4]))
