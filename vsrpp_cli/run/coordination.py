"""How the writer and the workers of one run meet: torch.distributed's key-value store (c10d).

One process: a HashStore in memory. Several: a TCPStore served by the writer (the launching
process on the first machine, which outlives any worker and any restart of them) and reached by
every worker over TCP, so no machine but the first needs the output's folder. Every operation is
atomic on the store's server; nothing goes through file names or file times.

The store has no authentication, so every key of a run lives under the run's secret (a
PrefixStore): a client that does not know it can neither read nor change them. On one machine the
store listens on loopback alone (a socket bound there and handed over: libuv's TCPStore server
otherwise listens on every interface whatever host it is given); across machines on every
interface, as the others must reach it.

Keys:
  job                      where the run's job is (the writer's intake, intake.py) and its SHA-256
  cuts/found               a shared run's scene cuts as the writer's pass finds them ("frame " each)
  cuts/decided             the frame before which every cut is found
  cuts/segments            the segment count, once the pass has ended
  claim/<round>/<segment>  the worker that took the segment in this round (compare_set: one wins)
  shipped                  the segments whole in the writer's intake, in the order they came:
                           "segment:rank:round" each (their bytes go beside the store: intake.py)
  saved/<i>                the writer has it on disk (fsynced): the worker may forget it
  within/<rank>            progress: frames of the worker's open segment done so far
  beat/<rank>, left/<rank> signs of life (a counter, compared with the writer's own clock only)
  error, abort             the first failure, and the writer telling every worker to stop
  round/<rank>             the round a worker started in (a restart is said)
  stats/<rank>/<round>     what a worker did: frames, seconds, fallbacks, notices
A round is one start of the workers (TORCHELASTIC_RESTART_COUNT): a restarted worker claims
afresh, and segments saved in an earlier round are not taken again.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from ..errors import UsageError, WorkerError

POLL = 0.05  # seconds between looks at the store
CONNECT_SECONDS = 300.0  # a worker waits this long for the writer's store to answer
SAVE_SECONDS = 600.0  # a worker waits this long for the writer to store a segment it sent
HEARTBEAT = 2.0  # seconds between a worker's signs of life


def silent_seconds() -> float:
    """A worker not heard from for this long has stopped (a lost machine, a stopped process)."""
    return float(os.environ.get("VSRPP_SILENT_SECONDS", 60))


def stall_seconds() -> float:
    """The least time a worker that is heard from may go without progress (loading the model,
    compiling kernels) before it counts as hung; more once its windows show how long they take."""
    return float(os.environ.get("VSRPP_STALL_SECONDS", 900))


WATCH_EVERY = 0.5  # seconds between the writer's looks at the workers' signs of life
STALL_FACTOR = 10  # a worker is hung after this many times its longest wait between steps seen so far


class AbortError(Exception):
    """The writer has stopped the run (it says why in `error`)."""


class Board:
    def __init__(self, store: dist.Store, secret: str = "", host: str = "127.0.0.1") -> None:
        self.store = dist.PrefixStore(f"vsrpp/{secret}", store) if secret else store
        self.secret, self.host = secret, host  # (the writer's machine, for its intake)

    # --------------------------------------------------------------------- opening
    @classmethod
    def in_memory(cls) -> Board:
        return cls(dist.HashStore())

    @classmethod
    def serve(cls, port: int, secret: str, loopback: bool) -> Board:
        """The writer's store at `port` (0: one the system picks): on loopback alone, or on every
        interface where workers of other machines must reach it. The socket is bound here and
        handed to the store, so a taken port is one clear error (never a client of its holder)."""
        try:
            listener = socket.create_server(("127.0.0.1" if loopback else "", port), backlog=256)
        except OSError as error:
            raise UsageError(
                f"port {port} is taken here ({os.strerror(error.errno or 0)}); give another --master-port (the "
                "writer uses the port after it)"
            ) from None
        try:
            store = dist.TCPStore(
                "127.0.0.1" if loopback else "0.0.0.0",
                listener.getsockname()[1],
                is_master=True,
                wait_for_workers=False,
                timeout=timedelta(seconds=CONNECT_SECONDS),
                master_listen_fd=listener.fileno(),
            )
        except BaseException:
            listener.close()
            raise
        listener.detach()  # the store's server owns the socket now
        return cls(store, secret)

    @property
    def port(self) -> int:
        return self.store.underlying_store.port if isinstance(self.store, dist.PrefixStore) else self.store.port

    @classmethod
    def connect(cls, host: str, port: int, secret: str) -> Board:
        return cls(dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=CONNECT_SECONDS)), secret, host)

    # --------------------------------------------------------------------- the job
    def publish_job(self, pointer: dict[str, Any]) -> None:
        """Where the job is and its digest (intake.py: the job itself travels beside the store);
        before it, the keys of the cuts (none found yet), which workers read once they have it."""
        self.store.set("cuts/found", "")
        self.store.set("cuts/decided", "0")
        self.store.set("job", json.dumps(pointer))

    def job_pointer(self) -> dict[str, Any]:
        self.store.wait(["job"], timedelta(seconds=CONNECT_SECONDS))
        return json.loads(self.store.get("job"))

    # --------------------------------------------------------------------- the cuts, as they are found
    def publish_cuts(self, found: list[int], decided: int, segments: int | None) -> None:
        """New cuts, then the count of segments once known, then how far they are known: a worker
        that reads the last first never sees a frame decided whose cut it lacks."""
        if found:
            self.store.append("cuts/found", "".join(f"{cut} " for cut in found))
        if segments is not None:
            self.store.set("cuts/segments", str(segments))
        self.store.set("cuts/decided", str(decided))

    def cuts(self) -> tuple[int, list[int], int | None]:
        """(frames decided, the cuts found, the segment count or None while the pass reads on)."""
        try:
            decided = int(self.store.get("cuts/decided"))
            segments = int(self.store.get("cuts/segments")) if self.store.check(["cuts/segments"]) else None
            found = [int(word) for word in self.store.get("cuts/found").split()]
        except ValueError:
            raise WorkerError("the run's scene cuts in the store are not numbers; is another program writing to "
                              "the run's store?") from None  # fmt: skip
        return decided, found, segments

    # --------------------------------------------------------------------- claims
    def claim(self, round_: int, segment: int, rank: int) -> bool:
        mine = str(rank).encode()
        return self.store.compare_set(f"claim/{round_}/{segment}", "", mine) == mine

    def claimed_by(self, round_: int, segment: int) -> int | None:
        key = f"claim/{round_}/{segment}"
        return int(self.store.get(key)) if self.store.check([key]) else None

    def is_saved(self, segment: int) -> bool:
        return self.store.check([f"saved/{segment}"])

    # --------------------------------------------------------------------- segments
    def ship(self, segment: int, rank: int = 0, round_: int = 0) -> None:
        """A segment is whole in the writer's intake (intake.py: its bytes never pass through the
        store), told with its sender, whose claim the writer checks."""
        self.store.append("shipped", f"{segment}:{rank}:{round_} ")

    def wait_saved(self, segment: int) -> None:
        """Until the writer has the segment on disk; stops early if the run is aborted."""
        # Looked at, not waited on: c10d logs a warning at every timed-out wait (on the terminal).
        deadline = time.monotonic() + SAVE_SECONDS
        while not self.is_saved(segment):
            self.check_abort()
            if time.monotonic() > deadline:
                raise WorkerError(
                    f"the writer has not stored segment {segment} in {SAVE_SECONDS:.0f} s; is the first machine's "
                    "disk or network stalled?"
                )
            time.sleep(POLL)

    def shipped(self) -> list[tuple[int, int, int]]:
        """(segment, sender's rank, its round) of every segment sent, in order."""
        if not self.store.check(["shipped"]):
            return []
        shipped = []
        for word in self.store.get("shipped").decode(errors="replace").split():
            fields = word.split(":")
            if len(fields) != 3 or not all(field.isdigit() for field in fields):
                raise WorkerError(f"a worker announced a segment as {word[:40]!r}, which no vsrpp worker sends; "
                                  "the run stopped")  # fmt: skip
            shipped.append((int(fields[0]), int(fields[1]), int(fields[2])))
        return shipped

    def mark_saved(self, segment: int) -> None:
        self.store.set(f"saved/{segment}", "1")

    # --------------------------------------------------------------------- progress
    def set_within(self, rank: int, frames: float) -> None:
        """The frames of the worker's open segment done so far (0 once it is saved)."""
        self.store.set(f"within/{rank}", f"{frames:.3f}")

    def within(self, world: int) -> float:
        return sum(self.withins(world))

    def withins(self, world: int) -> list[float]:
        """Each worker's frames of its open segment done (0 before it starts)."""
        return self.signs(world)[1]

    # --------------------------------------------------------------------- liveness and failures
    def beat(self, rank: int) -> int:
        return self.store.add(f"beat/{rank}", 1)

    def beats(self, world: int) -> list[int]:
        return self.signs(world)[0]

    def open_slots(self, world: int) -> None:
        """Every worker's keys made where missing (0, or "-": not yet), so that one multi_get
        reads them all (it waits for a missing key). Keys already set are left as they are."""
        for rank in range(world):
            self.store.add(f"beat/{rank}", 0)
            for key, empty in ((f"within/{rank}", "0"), (f"left/{rank}", "-"), (f"round/{rank}", "0")):
                self.store.compare_set(key, "", empty)

    def signs(self, world: int) -> tuple[list[int], list[float], list[int | None]]:
        """Each worker's beats, progress and the beat count it left at (None: it has not left):
        two store calls whatever the workers' number (at 64 workers, not 400: RESULTS,
        2026-12-06 sixth)."""
        names = ("beat", "within", "left")
        values = self.read_all([f"{name}/{rank}" for name in names for rank in range(world)], world)
        beats, withins, lefts = (values[i * world : (i + 1) * world] for i in range(len(names)))
        return [int(b) for b in beats], [float(w) for w in withins], [None if v == b"-" else int(v) for v in lefts]

    def everyone_left(self, world: int) -> bool:
        beats, _, lefts = self.signs(world)
        return all(left == count for left, count in zip(lefts, beats, strict=True))

    def leave(self, rank: int) -> None:
        """A worker done with its claims: its silence from now on is no failure."""
        self.store.set(f"left/{rank}", str(self.store.add(f"beat/{rank}", 0)))

    def finish(self) -> None:
        """The writer has every segment: workers waiting for the run's end (wait_end) may go."""
        self.store.set("done", "1")

    def wait_end(self, world: int) -> None:
        """A worker done with its claims waits until the writer has every segment or every worker
        has left; AbortError once the run is stopped (the store gone: its error). On a machine
        among several: a worker that ended at once would leave its machine's elastic agent in
        torch's exit barrier, waiting up to 300 s for another machine's agent whose worker failed
        (torch/distributed/elastic/agent/server/api.py, _exit_barrier), while the writer had
        stopped the run long before."""
        while not self.store.check(["done"]) and not self.everyone_left(world):
            self.check_abort()
            time.sleep(POLL)

    def fail(self, message: str) -> None:
        """The first failure is the one reported; those it causes are not."""
        self.store.compare_set("error", "", message.encode())

    def error(self) -> str | None:
        return self.store.get("error").decode() if self.store.check(["error"]) else None

    def abort(self, message: str) -> None:
        self.fail(message)
        self.store.set("abort", "1")

    def check_abort(self) -> None:
        if self.store.check(["abort"]):
            raise AbortError(self.error() or "the run was stopped")

    def start_round(self, rank: int, round_: int) -> None:
        """A worker (re)started: round 0, or the agent's restart count."""
        self.store.set(f"round/{rank}", str(round_))

    def rounds(self, world: int) -> list[int]:
        return [int(value) for value in self.read_all([f"round/{rank}" for rank in range(world)], world)]

    def read_all(self, keys: list[str], world: int) -> list[bytes]:
        if not self.store.check(keys):
            self.open_slots(world)
        return self.store.multi_get(keys)

    def report(self, rank: int, round_: int, stats: dict[str, Any]) -> None:
        self.store.set(f"stats/{rank}/{round_}", json.dumps(stats))

    def reports(self, world: int, rounds: int) -> list[dict[str, Any]]:
        keys = [f"stats/{rank}/{round_}" for rank in range(world) for round_ in range(rounds)]
        return [json.loads(self.store.get(key)) for key in keys if self.store.check([key])]


class Watch:
    """The writer's view of the workers, by its own clock: a worker whose beat counter has not
    moved for silent_seconds() has stopped (its machine or process is gone); one that beats but
    whose progress has not moved for its deadline hangs (its main thread is stuck). Workers that
    have left are neither."""

    def __init__(self, board: Board, world: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.board, self.world, self.clock = board, world, clock
        self.seen = [0] * world
        self.since = [clock()] * world
        self.progress: list[float | None] = [None] * world  # None: not started (no beat yet)
        self.moved = [0.0] * world  # when its progress last moved
        self.longest = [0.0] * world  # its longest wait between moves so far
        self.looked = float("-inf")

    def check(self) -> bool:
        """Looks at the workers (at most every WATCH_EVERY seconds); True when it looked."""
        now = self.clock()
        if now - self.looked < WATCH_EVERY:  # not at every poll
            return False
        self.looked = now
        beats, withins, lefts = self.board.signs(self.world)
        for rank, count in enumerate(beats):
            if count != self.seen[rank]:
                self.seen[rank], self.since[rank] = count, now
            if not count or lefts[rank] == count:
                continue
            if now - self.since[rank] > silent_seconds():
                raise WorkerError(
                    f"worker {rank} has not been heard from for {silent_seconds():.0f} s (its machine is lost or "
                    "the process hangs); the segments finished so far are kept: run the same command with --resume"
                )
            if self.progress[rank] is None or withins[rank] != self.progress[rank]:
                if self.progress[rank] is not None:
                    self.longest[rank] = max(self.longest[rank], now - self.moved[rank])
                self.progress[rank], self.moved[rank] = withins[rank], now
            elif now - self.moved[rank] > self.deadline(rank):
                raise WorkerError(
                    f"worker {rank} is alive but has made no progress for {self.deadline(rank):.0f} s (stuck in a "
                    "read, the GPU driver or the decoder); the segments finished so far are kept: run the same "
                    "command with --resume"
                )
        return True

    def deadline(self, rank: int) -> float:
        return max(stall_seconds(), STALL_FACTOR * self.longest[rank])
