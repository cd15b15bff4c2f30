"""Seconds per SSIM of one frame pair, as `vsrpp eval` and training's validation score it, against
the single 11x11 float64 convolution per plane that metrics.py used before (the figure in
RESULTS.md). Usage, from the repository root:

    python benchmarks/ssim_speed.py HEIGHT WIDTH     # e.g. 720 1280 (a REDS frame)

Prints JSON: both times (best of 3), torch's thread count, and the difference of the two SSIMs.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from vsrpp_cli.quality.metrics import PEAK, gaussian, prepare, ssim


def ssim_by_2d_convolution(output: np.ndarray, gt: np.ndarray) -> float:
    a, b = prepare(output, False), prepare(gt, False)
    window = torch.outer(gaussian(), gaussian()).view(1, 1, 11, 11)
    c1, c2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
    values = []
    for c in range(a.shape[-1]):
        x = torch.from_numpy(np.ascontiguousarray(a[..., c]))[None, None]
        y = torch.from_numpy(np.ascontiguousarray(b[..., c]))[None, None]
        mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
        var_x, var_y = F.conv2d(x * x, window) - mu_x**2, F.conv2d(y * y, window) - mu_y**2
        cov = F.conv2d(x * y, window) - mu_x * mu_y
        values.append(
            float(
                (((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))).mean()
            )
        )
    return float(np.mean(values))


def best_of(runs: int, score, *args) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(runs):
        started = time.perf_counter()
        value = score(*args)
        times.append(time.perf_counter() - started)
    return min(times), value


def main(height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    output = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    now, value_now = best_of(3, ssim, output, gt)
    before, value_before = best_of(3, ssim_by_2d_convolution, output, gt)
    print(
        json.dumps(
            {
                "size": f"{height}x{width}",
                "seconds_now": round(now, 3),
                "seconds_2d_convolution": round(before, 3),
                "torch_threads": torch.get_num_threads(),
                "ssim_difference": abs(value_now - value_before),
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
