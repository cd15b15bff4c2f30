"""The first run on a GPU: what must hold before any speed matters (benchmarks/gpu.sh quick).

For each device asked for (`cuda:0`, and `cuda:1` where there is one), on a short encoded clip
with random official-size weights: a run with CUDA graphs and one without give the same frames;
a live source (a FIFO, read in one pass) gives the frames of the file;
under --deterministic, --batch 1 and --batch 4 give the same frames; a second GPU gives the
frames of the first. One JSON line per check, and exit 1 if any failed. Usage:

    python benchmarks/gpu_checks.py OUT_DIR [--device cuda] [--size 64x96] [--frames 12]
    python benchmarks/gpu_checks.py OUT_DIR --device cpu --size 32x32 --frames 4    # the dry run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from media import encode_video, moving_scene, read_frames
from reference import random_official_checkpoint

from vsrpp_cli.run.pipeline import Options, upscale


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="64x96")
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="vsrpp-gpu-checks-"))
    scene = moving_scene(args.frames, height, width)
    clip = encode_video(work / "clip.mp4", scene, audio_channels=2)
    weights = work / "c64n7.pth"
    small = args.device == "cpu"
    torch.save(random_official_checkpoint(8 if small else 64, 1 if small else 7, True, 0, hr=64), weights)
    precision = "bf16" if small else "fp16"
    devices = [args.device] if small else [f"cuda:{i}" for i in range(min(2, torch.cuda.device_count()))]
    results = []

    def run(name: str, source: Path = clip, **settings) -> np.ndarray | None:
        output = work / f"{name}.mkv"
        options = Options(weights, precision=precision, chunk_frames=4, chunk_overlap=2, codec="ffv1", **settings)
        began = time.perf_counter()
        try:
            summary = upscale(source, output, options)
        except Exception as error:  # a failure is a result here
            results.append({"run": name, "ok": False, "error": f"{type(error).__name__}: {error}"[:300]})
            return None
        results.append({"run": name, "ok": True, "seconds": round(time.perf_counter() - began, 2),
                        "fps": round(summary.fps, 2), "fallbacks": summary.fp32_fallbacks,
                        "notices": summary.notices})  # fmt: skip
        return read_frames(output)

    def same(check: str, a: np.ndarray | None, b: np.ndarray | None) -> None:
        ok = a is not None and b is not None and np.array_equal(a, b)
        diff = int(np.abs(a.astype(int) - b.astype(int)).max()) if a is not None and b is not None else None
        results.append({"check": check, "ok": ok, "max_diff": diff})

    def run_live(name: str, **settings) -> tuple[np.ndarray | None, np.ndarray | None]:
        """A Matroska clip through a FIFO (run/one_pass.py's one pass, as for pipes), and as a file."""
        fifo = work / f"{name}.fifo"
        os.mkfifo(fifo)
        matroska = encode_video(work / "clip.mkv", scene, audio_channels=2, container_format="matroska")
        writer = threading.Thread(target=lambda: fifo.write_bytes(matroska.read_bytes()), daemon=True)
        writer.start()
        live = run(name, source=fifo, **settings)
        writer.join(timeout=60)  # a run that failed before reading it leaves the writer blocked: let it go
        return live, run(f"{name}-file", source=matroska, **settings)

    first = None
    for device in devices:
        graphs = run(f"{device}-graphs", device=device, graphs=True)
        eager = run(f"{device}-eager", device=device, graphs=False)
        same(f"{device}: graphs on and off give the same frames", graphs, eager)
        one = run(f"{device}-batch1", device=device, batch=1, deterministic=True)
        four = run(f"{device}-batch4", device=device, batch=4, deterministic=True)
        same(f"{device}: --batch 1 and 4 give the same frames under --deterministic", one, four)
        if first is None:
            first = one
            same(f"{device}: a live source (a FIFO, one pass) gives the frames of a file",
                 *run_live(f"{device}-live", device=device, batch=1, deterministic=True))  # fmt: skip
        else:
            same(f"{device} gives the frames of {devices[0]} (--deterministic)", one, first)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "gpu-checks.jsonl", "w") as file:
        for row in results:
            print(json.dumps(row))
            file.write(json.dumps(row) + "\n")
    return 0 if all(row["ok"] for row in results) else 1


if __name__ == "__main__":
    sys.exit(main())
