"""The thread budget: this process's cores (its affinity) shared among the run's processes;
the user's OMP_NUM_THREADS wins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from vsrpp_cli.run.engine import Engine, slow_on_this_cpu, slow_precision_advice
from vsrpp_cli.run.threads import available_cores, flushing_denormals, threads_per_process, use_threads
from vsrpp_cli.weights.checkpoint import load_model


def test_cores_follow_the_affinity():
    assert available_cores() == len(os.sched_getaffinity(0))


def test_processes_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = available_cores()
    assert threads_per_process(1) == cores
    assert threads_per_process(2) == max(1, cores // 2)
    assert threads_per_process(10 * cores) == 1  # never zero


def test_the_users_setting_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_process(8) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # meaningless: ignored
    assert threads_per_process(1) == available_cores()


def convolution_kernels(dtype: torch.dtype) -> set[str]:
    """The operators a 3x3 convolution in `dtype` runs on this CPU, as the profiler names them."""
    conv = torch.nn.Conv2d(4, 4, 3, padding=1).to(dtype)
    with torch.no_grad(), torch.profiler.profile() as profile:
        conv(torch.rand(1, 4, 8, 8).to(dtype))
    return {event.key for event in profile.key_averages() if "conv" in event.key}


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_slow_precision_rule_is_what_pytorch_runs(dtype, onednn):
    """vsrpp warns of a half precision on a CPU exactly where PyTorch convolves it with its
    reference kernel (_slow_conv2d, 40-90x slower than fp32 in a half type without oneDNN): the
    rule is checked against the kernel PyTorch really dispatches to on this machine (a 2-core
    EPYC without AVX-512 runs bf16 through it, a Xeon with AVX-512 through oneDNN), so a
    PyTorch that changes its choice shows here; with oneDNN turned off too. fp32 is never warned of
    (small fp32 convolutions take the same reference path, with a fast fp32 matrix product)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = onednn
    try:
        kernels = convolution_kernels(dtype)
        assert ("aten::_slow_conv2d_forward" in kernels) is slow_on_this_cpu(dtype), kernels
        assert slow_on_this_cpu(torch.float32) is False
    finally:
        torch.backends.mkldnn.enabled = before
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    advice = slow_precision_advice(dtype)
    assert advice.startswith(f"{name} on this CPU is 40-90x slower than fp32") and "--precision fp32" in advice


def test_use_threads_sizes_torch(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert use_threads(processes=available_cores()) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def flushed_share() -> float:
    """The share of a 2-thread elementwise op's denormal results flushed to zero: 1 where every
    thread taking part flushes, 0.5 where only the calling thread does."""
    return float((torch.full((1 << 22,), 1e-39) * 1.0 == 0).float().mean())


def test_the_network_runs_with_denormals_flushed_in_every_thread_and_leaves_the_callers_as_they_were(
    official_checkpoint,
):
    """What the same speed in any thread rests on (threads.NetworkThread): whatever thread calls,
    the forward runs where every OpenMP thread flushes denormals; the caller's own state is not
    changed, whether it flushed or not."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # (the share tells one thread from two)
    try:
        model = load_model(official_checkpoint(8, 1, True)[0])
        engine = Engine(model, torch.device("cpu"), torch.float32)
        frames = [np.zeros((16, 16, 3), np.uint8)] * 3
        seen: list[tuple[str, float]] = []

        def look(done: float) -> None:
            seen.append((threading.current_thread().name, flushed_share()))

        for callers_setting in (False, True):
            torch.set_flush_denormal(callers_setting)
            engine.upscale_many([(frames, slice(0, 3))], 8, None, look)
            assert flushing_denormals() is callers_setting
        assert {name for name, _ in seen} == {"vsrpp-network"} and {share for _, share in seen} == {1.0}
        caller = []
        thread = threading.Thread(target=lambda: caller.append(flushing_denormals()))  # a thread of the caller's
        torch.set_flush_denormal(False)
        thread.start(), thread.join()
        assert caller == [False]
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(before)


def test_an_interrupted_caller_waits_for_the_forward_to_stop(official_checkpoint):
    """Ctrl-C while the network's thread works: the forward stops at its next step and the
    interruption reaches the caller; the thread then serves the next call."""
    model = load_model(official_checkpoint(8, 1, True)[0])
    engine = Engine(model, torch.device("cpu"), torch.float32)
    frames = [np.zeros((16, 16, 3), np.uint8)] * 3
    steps = []

    def interrupt_caller(done: float) -> None:
        steps.append(done)
        if len(steps) == 2:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            time.sleep(0.5)  # the caller hears it while this forward is still running

    # Python's own Ctrl-C handler, whatever this process inherited (a background job of a
    # non-interactive shell starts with SIGINT ignored, and Python then leaves it so).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.upscale_many([(frames, slice(0, 3))], 8, None, interrupt_caller)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert len(steps) <= 3  # stopped at the next step, not at the end (4 x 3 steps + 3 frames)
    assert len(engine.upscale([np.zeros((16, 16, 3), np.uint8)] * 2, slice(0, 2), 8)) == 2


def test_a_worker_runs_the_network_without_importing_the_compiler(tmp_path, official_checkpoint):
    """A fresh process that builds the engine and runs a forward never imports torch._dynamo
    (torch.library.custom_op's kernel guard did, at the first forward) or torch._inductor
    (torch.use_deterministic_algorithms does): 3 s of every worker's start on the CPU."""
    weights = official_checkpoint(8, 1, True, seed=0)[0]
    script = (
        "import sys, numpy as np, vsrpp_cli\n"
        f"upscaler = vsrpp_cli.Upscaler(weights={str(weights)!r}, device='cpu', chunk_frames=2, chunk_overlap=0)\n"
        "list(upscaler.frames([np.zeros((16, 16, 3), np.uint8)] * 2))\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
