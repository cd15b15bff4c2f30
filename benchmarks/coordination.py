"""What coordinating workers costs, per segment, with a stand-in network: `--strength 0` returns
the enlarged source (bilinear x4, the network's own skip) without running the network, so what
is left is decoding, encoding, and the segments' trip through the store to the writer's disk.
Then the writer's cost per byte, and the store's throughput for one large segment, for the
arithmetic in benchmarks/RESULTS.md. Usage, from the repository root:

    python benchmarks/coordination.py            # 960 frames of 144x256, segments of 24 frames
    python benchmarks/coordination.py watch      # the writer's look at 2-256 simulated workers
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from media import encode_video, moving_scene
from reference import random_official_checkpoint

from vsrpp_cli.run.coordination import Board, Watch


def run(source: Path, output: Path, weights: Path, *extra: str) -> tuple[dict, float]:
    args = ["--weights", str(weights), "--strength", "0", "--chunk-frames", "8", "--chunk-overlap", "2"]
    args += ["--segment-frames", "24", "--json", "-q", *extra]
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "vsrpp_cli", "upscale", str(source), str(output), *args],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(result.stdout), time.perf_counter() - began


def store_throughput(size: int) -> float:
    """Seconds for one `size`-byte segment to go through a TCPStore on this machine (set, get)."""
    server = Board.serve(0, "benchmark", loopback=True)
    client = Board.connect("127.0.0.1", server.port, "benchmark")
    blob = {"packets": bytes(size)}
    began = time.perf_counter()
    client.send(0, blob)
    server.take(0)
    return time.perf_counter() - began


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
    work = Path(tempfile.mkdtemp(prefix="vsrpp-coordination-"))
    frames, height, width = 960, 144, 256
    source = encode_video(work / "clip.mp4", moving_scene(frames, height, width), audio_channels=2)
    weights = work / "c8n1.pth"
    torch.save(random_official_checkpoint(8, 1, True, 0), weights)
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
    for megabytes in (8, 64):
        seconds = min(store_throughput(megabytes * 2**20) for _ in range(3))
        print(json.dumps({"store_segment_mb": megabytes, "seconds": round(seconds, 4),
                          "mb_per_s": round(megabytes / seconds, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
