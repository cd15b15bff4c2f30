"""What coordinating workers costs, per segment, with a stand-in network: `--strength 0` returns
the enlarged source (bilinear x4, the network's own skip) without running the network, so what
is left is decoding, encoding, and the segments' trip to the writer's disk. Then the writer's
cost per byte, for the arithmetic in benchmarks/RESULTS.md. Usage, from the repository root:

    python benchmarks/coordination.py            # 960 frames of 144x256, segments of 24 frames
    python benchmarks/coordination.py watch      # the writer's look at 2-256 simulated workers
    python benchmarks/coordination.py transfer   # a 4K frames segment from a machine without the folder
    python benchmarks/coordination.py spool      # a window kept for --resume: the network's thread's share
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from media import encode_video, moving_scene
from reference import random_official_checkpoint

from vsrpp_cli.run.coordination import Board, Watch
from vsrpp_cli.run.folder import Spool
from vsrpp_cli.run.intake import Intake
from vsrpp_cli.run.segments import SpoolWriter


def run(source: Path, output: Path, weights: Path, *extra: str) -> tuple[dict, float]:
    args = ["--weights", str(weights), "--strength", "0", "--chunk-frames", "8", "--chunk-overlap", "2"]
    args += ["--segment-frames", "24", "--json", "-q", *extra]
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "vsrpp_cli", "upscale", str(source), str(output), *args],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(result.stdout), time.perf_counter() - began


def transfer(frames: int = 24, frame_bytes: int = 3840 * 2160 * 3) -> dict:
    """One frames-folder segment of 4K frames (incompressible, as PNG of noise is) streamed by a
    worker process without the run's folder to the writer's intake over loopback: its seconds, and
    how much the writer's process grew at its peak (ru_maxrss) while taking it."""
    work = Path(tempfile.mkdtemp(prefix="vsrpp-transfer-"))
    built = work / "built"
    built.mkdir()
    for index in range(frames):
        with open(built / f"{index:08d}.png", "wb") as file:
            for _ in range(0, frame_bytes, 1 << 20):
                file.write(os.urandom(min(1 << 20, frame_bytes)))
    size = sum(path.stat().st_size for path in built.iterdir())
    intake = Intake(work, "benchmark")
    intake.serve(0)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sender = (f"from pathlib import Path; from vsrpp_cli.run.intake import upload; "
              f"upload('127.0.0.1', {intake.address['port']}, 'benchmark', 0, 1, 0, Path({str(built)!r}))")  # fmt: skip
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", sender], check=True)
    seconds = time.perf_counter() - began
    intake.close()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    arrived = intake.arrived(0, 1, 0)
    assert arrived is not None and sum(path.stat().st_size for path in arrived.iterdir()) == size
    shutil.rmtree(work)
    megabytes = size / 1e6
    return {"segment_mb": round(megabytes, 1), "seconds": round(seconds, 2), "mb_per_s": round(megabytes / seconds, 1),
            "writer_peak_grew_mb": round(grown / 1024, 1)}  # fmt: skip


def spool_cost(height: int, width: int, frames: int = 8, runs: int = 3) -> dict:
    """A window of `frames` frames kept losslessly for --resume: seconds of the calling thread
    when it writes the window itself (Spool.save_window, as before SpoolWriter), and when it hands
    the window to SpoolWriter's thread while a forward as long as the write runs on."""
    window = [np.ascontiguousarray(frame) for frame in moving_scene(frames, height, width)]
    work = Path(tempfile.mkdtemp(prefix="vsrpp-spool-"))
    writes = []
    for index in range(runs):
        began = time.perf_counter()
        Spool(work).save_window(index, window)
        writes.append(time.perf_counter() - began)
    spooling, hand_overs = SpoolWriter(Spool(work)), []
    for index in range(runs):
        began = time.perf_counter()
        spooling.save(runs + index, window)
        hand_overs.append(time.perf_counter() - began)
        time.sleep(1.5 * max(writes))  # the network's next forward
    spooling.close()
    shutil.rmtree(work)
    return {"size": f"{width}x{height}", "frames": frames, "write_s": [round(t, 3) for t in writes],
            "hand_over_ms": [round(1000 * t, 3) for t in hand_overs]}  # fmt: skip


def watch_cost(world: int, looks: int = 200) -> float:
    """The writer's look at `world` workers' signs of life (Watch.check, every WATCH_EVERY
    seconds), over a real TCPStore on loopback, the workers' keys set by another client: its
    median seconds."""
    server = Board.serve(0, "benchmark", loopback=True)
    workers = Board.connect("127.0.0.1", server.port, "benchmark")
    watch = Watch(server, world)
    for rank in range(world):
        workers.beat(rank)
        workers.set_within(rank, 1.0)
    times = []
    for _ in range(looks):
        watch.looked = float("-inf")
        began = time.perf_counter()
        watch.check()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    if sys.argv[1:] == ["watch"]:
        for world in (2, 8, 64, 256):
            print(json.dumps({"workers": world, "look_ms": round(1000 * watch_cost(world), 3)}))
        return
    if sys.argv[1:] == ["transfer"]:
        print(json.dumps(transfer()))
        return
    if sys.argv[1:] == ["spool"]:
        for height, width in ((720, 1280), (2160, 3840)):
            print(json.dumps(spool_cost(height, width)))
        return
    work = Path(tempfile.mkdtemp(prefix="vsrpp-coordination-"))
    frames, height, width = 960, 144, 256
    source = encode_video(work / "clip.mp4", moving_scene(frames, height, width), audio_channels=2)
    weights = work / "c8n1.pth"
    torch.save(random_official_checkpoint(8, 1, True, 0, hr=64), weights)
    rows = []
    runs = [("1 process", [])] + [(f"{n} workers", ["--nproc-per-node", str(n), "--device", "cpu"]) for n in (2, 4)]
    for name, extra in runs:
        facts, wall = run(source, work / f"{name[0]}.mp4", weights, *extra)
        print(f"{name}: {wall:.1f} s", file=sys.stderr)
        timings, workers = facts["timings"], facts["workers"] or []
        sent = sum(w["bytes_sent"] for w in workers) or facts["output_bytes"]
        rows.append({
            "run": name,
            "wall_s": round(wall, 2),
            "pipeline_fps": facts["fps"],
            "segments": timings["segments"],
            "output_mb": round(facts["output_bytes"] / 1e6, 2),
            "saving_ms_per_segment": round(1000 * timings["seconds_saving"] / timings["segments"], 2),
            "joining_ms_per_segment": round(1000 * timings["seconds_joining"] / timings["segments"], 2),
            "sending_ms_per_segment": round(
                1000 * sum(w["seconds_sending"] for w in workers) / max(1, sum(w["segments"] for w in workers)), 2
            ) if workers else None,
            "writer_ns_per_byte": round(1e9 * (timings["seconds_saving"] + timings["seconds_joining"]) / sent, 2),
            "bits_per_output_pixel": round(8 * facts["output_bytes"] / (frames * 16 * height * width), 4),
        })  # fmt: skip
    for row in rows:
        print(json.dumps(row))

if __name__ == "__main__":
    main()
