"""The thread budget: this process's cores (its affinity) shared among the run's processes;
the user's OMP_NUM_THREADS wins."""

from __future__ import annotations

import os

import torch

from vsrpp_cli.threads import available_cores, threads_per_process, use_threads


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


def test_use_threads_sizes_torch(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert use_threads(processes=available_cores()) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
