"""CUDA graphs for the propagation steps: each step's ~50 kernels replayed as one launch.

The recurrence is strictly sequential and its kernels are small (a 180x320 step is estimated at
well under a millisecond on an H100, docs/REFERENCE.md section 7: not yet measured), so launching
them one by one from Python can cost as much as running them. Each branch's first step and
aligned step is captured once per input signature (shapes, strides, dtype) and replayed for
every frame of every window of that size; the number of frames does not matter. Inputs are
copied into the graph's own buffers before a replay and the output is copied out after it, so
the caller's tensors are never aliased.

A captured graph is checked once against the eager result of the same inputs, its output buffer
filled with NaN first; if they differ (a kernel that cannot be captured faithfully, a graph that
recorded nothing), or the capture itself fails, graphs are turned off with a warning and the
eager path runs from then on.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

WARMUP_RUNS = 2  # before capture, on a side stream, as torch.cuda.graphs advises (cuDNN, Triton)
CAPTURE_LOCK = threading.Lock()  # "only one capture at a time" per process (torch.cuda.graphs)


class GraphedStep:
    """Calls `function(*tensors)` through a CUDA graph captured per input signature."""

    def __init__(self, function: Callable[..., Tensor], pool: tuple[int, int], switch: GraphSwitch) -> None:
        self.function = function
        self.pool = pool  # one memory pool for all the model's graphs: they never run at once
        self.switch = switch
        self.graphs: dict[tuple, tuple[list[Tensor], Tensor, torch.cuda.CUDAGraph]] = {}

    def __call__(self, *args: Tensor) -> Tensor:
        if not self.switch.enabled or not args[0].is_cuda:
            return self.function(*args)
        key = tuple((a.shape, a.stride(), a.dtype, a.device) for a in args)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(key, args)
            if entry is None:
                return self.function(*args)
        inputs, output, graph = entry
        for buffer, value in zip(inputs, args, strict=True):
            buffer.copy_(value)
        graph.replay()
        return output.clone()

    def _capture(self, key: tuple, args: tuple[Tensor, ...]) -> tuple | None:
        """Capture on the inputs' device, whatever the current one: torch.cuda.graph's default
        capture stream is made once, on the device current at its first use, and a capture on
        another device's stream records nothing (PyTorch only warns)."""
        device = args[0].device
        try:
            with CAPTURE_LOCK, torch.cuda.device(device):  # one capture at a time in a process
                return self._capture_on(key, args, device)
        except RuntimeError as error:  # a kernel that cannot be captured: eager from now on
            self.switch.turn_off(f"capturing a propagation step failed ({str(error).splitlines()[0]})")
            return None

    def _capture_on(self, key: tuple, args: tuple[Tensor, ...], device: torch.device) -> tuple | None:
        inputs = [torch.empty_like(a) for a in args]
        for buffer, value in zip(inputs, args, strict=True):
            buffer.copy_(value)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                eager = self.function(*inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the decode and encode threads may call CUDA while this thread captures
        with torch.cuda.graph(
            graph, pool=self.pool, stream=torch.cuda.Stream(device), capture_error_mode="thread_local"
        ):
            output = self.function(*inputs)
        if not replays_faithfully(graph.replay, output, eager):
            self.switch.turn_off("a captured propagation step differs from its eager run")
            return None
        self.graphs[key] = (inputs, output, graph)
        return self.graphs[key]


def replays_faithfully(replay: Callable[[], None], output: Tensor, eager: Tensor) -> bool:
    """The output buffer is filled with NaN before the replay, so a graph that recorded nothing
    (or not all of the output) fails, rather than passing on what the capture run left there."""
    output.fill_(float("nan"))
    replay()
    return torch.equal(output, eager)


class GraphSwitch:
    """Shared by all the steps of one model: one failure turns graphs off for all of them."""

    def __init__(self) -> None:
        self.enabled = True

    def turn_off(self, reason: str) -> None:
        self.enabled = False
        warnings.warn(f"CUDA graphs turned off: {reason}; running eagerly", stacklevel=3)


def graphed_steps(model: torch.nn.Module) -> dict[str, tuple[GraphedStep, GraphedStep]]:
    """Step functions for BasicVSRPlusPlus.step_runners: fresh graphs for the model's current
    parameters (make new ones after the model's dtype or device changes)."""
    pool = torch.cuda.graph_pool_handle()
    switch = GraphSwitch()
    return {
        name: (
            GraphedStep(partial(model.first_step, name), pool, switch),
            GraphedStep(partial(model.aligned_step, name), pool, switch),
        )
        for name in model.deform_align
    }
