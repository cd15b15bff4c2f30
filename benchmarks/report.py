"""Render the JSON rows of benchmarks/gpu.sh into one Markdown report, with the targets of the
GPU engine (frames/s at 180x320 and 540x960 in fp16, pipeline within 10% of the model, fp16
within 50 dB of fp32) checked against the best measured configuration.

    python benchmarks/report.py benchmarks/gpu-run > report.md
    python benchmarks/report.py --gpu-slug benchmarks/gpu-run     # e.g. "h100"
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TARGETS = {"180x320": 250.0, "540x960": 30.0}  # model frames/s, one H100, fp16
PSNR_TARGET = 50.0
PIPELINE_SLACK = 0.10


def load(folder: Path) -> dict[str, list[dict]]:
    return {path.stem: json.loads(path.read_text() or "[]") for path in sorted(folder.glob("*.json"))}


def machine(folder: Path) -> str:
    path = folder / "machine.txt"
    return path.read_text().strip() if path.exists() else "machine: not recorded"


def gpu_slug(folder: Path) -> str:
    gpu = re.search(r"^gpu: (.*)$", machine(folder), re.MULTILINE)
    name = gpu.group(1) if gpu else "cpu"
    model = re.search(r"\b([A-Z]\d{2,4}|RTX \w+)\b", name)
    return re.sub(r"[^a-z0-9]+", "-", (model.group(1) if model else name).lower()).strip("-") or "gpu"


def label(row: dict) -> str:
    if row["what"] == "pipeline":
        return f"pipeline ({row['colour']} colour)"
    if row["what"] in ("stage", "encoder"):
        return row["stage"]
    if row["backend"] == "plain":
        return "model, plain fp32"
    return "model, compiled" if row.get("compiled") else "model"


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| what | size | precision | DCN | graphs | batch | frames/s | ms | peak GPU MiB | vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        guard = "" if r["psnr_vs_fp32"] is None else f"{r['psnr_vs_fp32']:.1f} dB, max {r['max_diff_vs_fp32']:.2g}"
        if not r["finite"]:
            guard = "NON-FINITE " + guard
        gpu = "" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"
        lines.append(
            f"| {label(r)} | {r['size']} | {r['precision']} | {r['backend']} | {'on' if r['graphs'] else 'off'} "
            f"| {r['batch']} | {r['fps']:.2f} | {r['ms_per_frame']:.3f} | {gpu} | {guard} |"
        )
    return lines


def targets(runs: dict[str, list[dict]]) -> list[str]:
    rows = [r for group in runs.values() for r in group]
    lines = ["| target | wanted | measured (best configuration) | met |", "|---|---|---|---|"]
    for size, wanted in TARGETS.items():
        model = [r for r in rows if r["what"] == "model" and r["size"] == size and r["precision"] == "fp16"]
        if not model:
            continue
        best = max(model, key=lambda r: r["fps"])
        config = f"{best['backend']}, graphs {'on' if best['graphs'] else 'off'}, batch {best['batch']}"
        lines.append(
            f"| model {size}, fp16 | {wanted:.0f} frames/s | {best['fps']:.1f} ({config}) "
            f"| {'yes' if best['fps'] >= wanted else 'no'} |"
        )
        pipeline = [r for r in rows if r["what"] == "pipeline" and r["size"] == size and r["precision"] == "fp16"]
        if pipeline:
            top = max(pipeline, key=lambda r: r["fps"])
            floor = best["fps"] * (1 - PIPELINE_SLACK)
            lines.append(
                f"| pipeline {size} within {PIPELINE_SLACK:.0%} of the model | {floor:.1f} frames/s "
                f"| {top['fps']:.1f} | {'yes' if top['fps'] >= floor else 'no'} |"
            )
    reduced = [r for r in rows if r["what"] == "model" and r["precision"] == "fp16" and r["psnr_vs_fp32"]]
    if reduced:
        worst = min(reduced, key=lambda r: r["psnr_vs_fp32"])
        lines.append(
            f"| fp16 against fp32 | {PSNR_TARGET:.0f} dB | {worst['psnr_vs_fp32']:.1f} dB (worst row, "
            f"{worst['backend']}) | {'yes' if worst['psnr_vs_fp32'] >= PSNR_TARGET else 'no'} |"
        )
    return lines


def report(folder: Path) -> str:
    runs = load(folder)
    out = ["# GPU benchmark: `benchmarks/gpu.sh`", "", "```", machine(folder), "```", "", "## Targets", ""]
    out += targets(runs)
    for name, rows in runs.items():
        out += ["", f"## {name}", ""]
        out += table(rows) if rows else ["(no rows: see the log beside the JSON)"]
    for log in ("tests-cuda.log", "tests-triton.log"):
        path = folder / log
        if path.exists():
            last = path.read_text().strip().splitlines()[-1:] or ["(empty)"]
            out += ["", f"{log}: `{last[0]}`"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1] == "--gpu-slug":
        print(gpu_slug(Path(sys.argv[2])))
    else:
        print(report(Path(sys.argv[1])), end="")
