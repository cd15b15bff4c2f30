"""Where the suite's CPU time goes, per test and per file: a pytest plugin.

    OMP_NUM_THREADS=1 PYTHONPATH=benchmarks python -m pytest -q -p suite_cpu

Run it in one process (no `-n`): it reads the whole machine's busy time (/proc/stat) around each
test, which counts every process a test starts (forked workers that pytest's own rusage never
sees) and nothing else only while one test runs at a time. Prints the files by busy seconds;
VSRPP_SUITE_CPU names a JSON-lines file for each test's figures. Linux only.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict

import pytest

_tests: list[dict] = []


def _busy_seconds() -> float:
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    began, busy = time.monotonic(), _busy_seconds()
    yield
    _tests.append({"id": item.nodeid, "wall": time.monotonic() - began, "busy": _busy_seconds() - busy})


def pytest_terminal_summary(terminalreporter):
    if not _tests:
        return
    if path := os.environ.get("VSRPP_SUITE_CPU"):
        with open(path, "w") as out:
            out.writelines(json.dumps(test) + "\n" for test in _tests)
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for test in _tests:
        figures = files[test["id"].split("::")[0]]
        figures[0] += test["busy"]
        figures[1] += test["wall"]
        figures[2] += 1
    write = terminalreporter.write_line
    write(f"busy CPU-s {sum(t['busy'] for t in _tests):.0f}, wall s {sum(t['wall'] for t in _tests):.0f}")
    for name, (busy, wall, count) in sorted(files.items(), key=lambda item: -item[1][0]):
        write(f"{busy:8.1f} busy {wall:8.1f} wall {count:4d} tests  {name}")
