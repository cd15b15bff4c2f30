"""Named points in the pipeline where a test makes a process crash, raise or stall, as etcd's
gofail and TiKV's fail-rs do.

VSRPP_FAILPOINTS lists them, comma-separated: `NAME[/RANK][@HIT]=ACTION`.
- NAME: cuts (a frame seen by a shared run's scene-cut pass, in the writer's process), decode (a
  window's frames read), network (a window upscaled), spool (a window about to be written to the
  worker's spool, in the spool's own thread), encode (a segment's
  encoder flushed, the segment about to be sent), stream (a segment part-way through its transfer
  to the writer's intake: its first file sent, from a machine without the run's folder), send
  (sent, not yet acknowledged),
  save (the writer about to store a received segment), join (the segments being joined), rename
  (the joined file about to be moved into place).
- RANK: only in that worker (RANK of torch.distributed; the in-process worker is 0).
- HIT: only at the HIT-th time the point is reached in that process's run (from 1); every time if
  unset.
- ACTION: crash (SIGKILL to itself: nothing runs, as with kill -9 or a power cut), raise (an
  error, which the pipeline handles as any other), stall (SIGSTOP to itself: a lost machine, as
  the others see it), hang (the calling thread blocks for ever, the process's other threads run
  on: a read stuck on a network file system, a wedged GPU), full (the OSError of a full disk),
  forge (a worker announces a segment it did not claim, as a peer gone wrong or a stranger with
  the secret would; the writer must refuse it).

Failpoints act in the first start of the workers only: a worker restarted by the elastic agent
(--max-restarts) runs as a process restarted after a transient fault would. Unset, a failpoint
costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable

from ..errors import VsrppError

POINTS = ("cuts", "decode", "network", "spool", "encode", "stream", "send", "save", "join", "rename")
ACTIONS = ("crash", "raise", "stall", "hang", "full", "forge")
SPEC = re.compile(r"(?P<name>\w+)(?:/(?P<rank>\d+))?(?:@(?P<hit>\d+))?=(?P<action>\w+)")

_hits: Counter[str] = Counter()  # times each point was reached in this process's current run


class FailpointError(VsrppError):
    """Raised by a failpoint set to `raise`."""


def parse(text: str) -> list[tuple[str, int | None, int | None, str]]:
    rules = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = SPEC.fullmatch(item)
        if not match or match["name"] not in POINTS or match["action"] not in ACTIONS:
            raise ValueError(
                f"VSRPP_FAILPOINTS: {item!r}: write NAME[/RANK][@HIT]=ACTION with NAME one of {', '.join(POINTS)} "
                f"and ACTION one of {', '.join(ACTIONS)}"
            )
        rank, hit = match["rank"], match["hit"]
        rules.append((match["name"], int(rank) if rank else None, int(hit) if hit else None, match["action"]))
    return rules


def start_run() -> None:
    """Hits count from here (a process may make several runs: tests, several inputs)."""
    _hits.clear()


def failpoint(name: str, rank: int = 0, forge: Callable[[], None] | None = None) -> None:
    """Reached `name`: act if VSRPP_FAILPOINTS says so (`forge`: what a worker does to forge)."""
    text = os.environ.get("VSRPP_FAILPOINTS")
    if not text or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    _hits[name] += 1
    for point, only_rank, hit, action in parse(text):
        if point != name or (only_rank is not None and only_rank != rank) or hit not in (None, _hits[name]):
            continue
        if action == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "stall":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif action == "hang":
            threading.Event().wait()
        elif action == "full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"failpoint {name}")
        elif action == "forge":
            if forge is None:
                raise ValueError(f"VSRPP_FAILPOINTS: {name}=forge: only a worker's points can forge")
            forge()
        else:
            raise FailpointError(f"failpoint {name} (VSRPP_FAILPOINTS)")
