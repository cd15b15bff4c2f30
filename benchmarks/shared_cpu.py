"""One video on 2 worker processes against 1 process, on the CPU: frames/s of each run and the
peak host memory of each process (benchmarks/RESULTS.md). Usage, from the repository root:

    python benchmarks/shared_cpu.py      # 64 frames of 72x128, random C16/N2 weights
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from media import encode_video, moving_scene
from reference import random_official_checkpoint


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="vsrpp-shared-"))
    source = encode_video(work / "clip64.mp4", moving_scene(64, 72, 128), audio_channels=2)
    weights = work / "c16n2.pth"
    torch.save(random_official_checkpoint(16, 2, True, 0, hr=64), weights)
    common = ["--weights", str(weights), "--chunk-frames", "8", "--chunk-overlap", "4", "--json", "-q"]
    for name, extra in (("one", []), ("two", ["--nproc-per-node", "2", "--device", "cpu"])):
        began = time.perf_counter()
        command = [sys.executable, "-m", "vsrpp_cli", "upscale", str(source), str(work / f"{name}.mp4")]
        # GNU time's %M: the peak RSS of the launching process (or of a worker, if larger).
        run = subprocess.run(["/usr/bin/time", "-f", "%M", *command, *common, *extra], capture_output=True, text=True)
        wall = time.perf_counter() - began
        summary = json.loads(run.stdout)
        print(json.dumps({
            "run": name,
            "frames": summary["frames"],
            "fps": summary["fps"],
            "wall_s": round(wall, 1),
            "launching_process_peak_rss_mib": round(int(run.stderr.strip().splitlines()[-1]) / 1024, 1),
            "workers": summary["workers"],
        }))  # fmt: skip


if __name__ == "__main__":
    main()
