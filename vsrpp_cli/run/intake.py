"""How the job reaches the workers and a finished segment's files the writer: beside the store,
never through it.

The store carries control only (claims, "shipped", progress, and where the job is); a segment's
bytes go to disk as they are made, so neither the writer's process nor the store holds a segment
in memory and no store value limits its size (libuv's TCPStore refuses values over 8 MiB). The
job (with the frame-time table: about 10 MB for 4 hours at 60 frames/s) is read from the run's
folder where a worker sees it, else fetched from the intake, and checked against its SHA-256 in
the store either way.

- A worker that sees the run's folder (the writer's machine, or one sharing its file system)
  builds each segment in the folder's `incoming/<segment>-<rank>-<round>.partial` and renames it
  whole when the encoder is done. It knows it sees *this* run's folder by a marker file named by
  a token made at launch and told in the job (a folder of the same path on another machine, or
  an older run's, does not hold it).
- A worker on a machine without the folder builds the segment in its own spool folder and
  streams it to the intake: a TCP server of the writer's process (across machines only) that
  takes a transfer only when signed with the run's secret (HMAC-SHA256 over a nonce of the
  server's, so a recorded transfer cannot be replayed), takes only file names a segment may
  have, and writes them under `incoming/` alone, a megabyte at a time.

Either way the writer then finds the segment at a path it derives from the shipped (segment,
rank, round) itself, checks it (writer.segment_fault) and commits it (folder.commit_segment).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError, WorkerError
from .folder import PARTIAL, remove

INCOMING = "incoming"
SEGMENT_FILE = re.compile(r"\d{8}\.png|packets|index\.json")  # what a segment may hold: PNG frames, or packets + index
CHUNK = 1 << 20  # bytes read or written at a time
HEADER_BYTES = 16 << 20  # a transfer's list of files: 100,000 frames' names fit many times over
IO_SECONDS = 120.0  # a peer silent this long in the middle of a transfer is dropped
# A connection not yet proved to be the run's (its signed header) holds one of a few slots for at
# most HEADER_SECONDS in all, however it trickles: strangers can neither pile up threads and header
# buffers nor keep the run's workers out for long (they wait in the listen backlog meanwhile).
UNPROVED_AT_ONCE = 16
HEADER_SECONDS = 30.0
MARKER = ".run-{token}"
JOB = "job.json"
JOB_BYTES = 1 << 30  # the most a job may weigh (hours of frame times are megabytes)


def arrival_name(segment: int, rank: int, round_: int) -> str:
    return f"{segment}-{rank}-{round_}"


def sees_folder(folder: Path, token: str) -> bool:
    """Whether this machine sees the writer's run folder itself (its marker for this launch)."""
    return (folder / INCOMING / MARKER.format(token=token)).is_file()


class Intake:
    """The writer's side: the run folder's `incoming/` (emptied: what an earlier launch left is
    made again from the workers' spools), its marker, and across machines the TCP server."""

    def __init__(self, run_folder: Path, secret: str) -> None:
        self.folder = run_folder / INCOMING
        remove(self.folder)
        self.folder.mkdir()
        self.token = secrets.token_hex(16)
        (self.folder / MARKER.format(token=self.token)).touch()
        self.secret = secret.encode()
        self.listener: socket.socket | None = None
        self.refusals: list[str] = []  # what stopped a transfer for the run: the writer raises the first
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.unproved = threading.BoundedSemaphore(UNPROVED_AT_ONCE)
        self.closing = threading.Event()
        self.job = b""

    def publish(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job, where the workers read or fetch it; what the store says of it (its place and
        digest, never the job itself)."""
        self.job = json.dumps(job).encode()
        (self.folder / JOB).write_bytes(self.job)
        return {**self.address, "sha256": hashlib.sha256(self.job).hexdigest()}

    @property
    def address(self) -> dict[str, Any]:
        """Where workers find the intake: the marker's token, the server's port (None: none)."""
        return {"token": self.token, "port": self.listener.getsockname()[1] if self.listener else None}

    def serve(self, port: int) -> None:
        """Serve on every interface at `port` (machines without the folder must reach it)."""
        try:
            self.listener = socket.create_server(("", port), backlog=64)
        except OSError as error:
            raise UsageError(
                f"port {port} is taken here ({os.strerror(error.errno or 0)}); give another --master-port (segments "
                "travel to the writer at the port two after it)"
            ) from None
        self._start(self._accept)

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="vsrpp-intake")
        self.threads = [*filter(threading.Thread.is_alive, self.threads), thread]
        thread.start()

    def _accept(self) -> None:
        assert self.listener is not None
        while not self.closing.is_set():
            if not self.unproved.acquire(timeout=0.1):
                continue  # every slot taken by a connection still to prove itself
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed: the run is ending
                self.unproved.release()
                return
            with self.lock:
                self.connections.add(connection)
            self._start(self._receive, connection)

    def _receive(self, connection: socket.socket) -> None:
        slot = [self.unproved]  # given back once, when the peer has proved itself or is gone

        def proved() -> None:
            if slot:
                slot.pop().release()

        try:
            with connection:
                self._transfer(connection, proved)
        except (OSError, ValueError):  # a peer that went away, or one without the secret: nothing is kept
            pass
        finally:
            proved()
            with self.lock:
                self.connections.discard(connection)

    def _transfer(self, connection: socket.socket, proved: Callable[[], None]) -> None:
        nonce = secrets.token_bytes(32)
        deadline = time.monotonic() + HEADER_SECONDS
        connection.settimeout(HEADER_SECONDS)
        connection.sendall(nonce)
        (length,) = struct.unpack("<I", receive_exactly(connection, 4, deadline))
        if length > HEADER_BYTES:
            return
        header = receive_exactly(connection, length, deadline)
        if not hmac.compare_digest(receive_exactly(connection, 32, deadline), sign(self.secret, b"head", nonce,
                                                                                  header)):  # fmt: skip
            return  # not from this run: said to no one (a stranger must not be able to stop the run)
        proved()
        connection.settimeout(IO_SECONDS)
        try:
            facts = json.loads(header)
            if isinstance(facts, dict) and facts.get("want") == "job":
                connection.sendall(struct.pack("<Q", len(self.job)) + self.job + sign(self.secret, b"job", nonce,
                                                                                         self.job))  # fmt: skip
                return
            segment, rank, round_, files = parse_header(facts)
        except (ValueError, TypeError, KeyError):
            self.refusals.append("a peer with the run's secret sent a transfer in a form no vsrpp worker sends; the "
                                 "run stopped (the finished segments are kept: run the same command with --resume)")
            return
        why = refusal(files)
        if why is not None:
            self.refusals.append(f"worker {rank} sent segment {segment} {why}; the run stopped (the finished "
                                 "segments are kept: run the same command with --resume)")  # fmt: skip
            connection.sendall(b"NO")
            return
        final = self.folder / arrival_name(segment, rank, round_)
        partial = final.with_name(final.name + PARTIAL)
        remove(partial)
        partial.mkdir()
        try:
            body = hmac.new(self.secret, b"body" + nonce + header, hashlib.sha256)
            for name, size in files:
                with open(partial / name, "xb") as file:
                    for chunk in receive_stream(connection, size):
                        body.update(chunk)
                        try:
                            file.write(chunk)
                        except OSError as error:  # the writer's disk, not the peer: the run's failure
                            self.refusals.append(f"the writer could not store segment {segment} from worker {rank} "
                                                 f"({os.strerror(error.errno or 0)}); make room, then run the same "
                                                 "command with --resume")  # fmt: skip
                            raise
            if not hmac.compare_digest(receive_exactly(connection, 32), body.digest()):
                raise ValueError("the segment's bytes are not what was signed")
            remove(final)
            partial.replace(final)
        except BaseException:
            remove(partial)
            raise
        connection.sendall(b"OK")

    def arrived(self, segment: int, rank: int, round_: int) -> Path | None:
        """The folder of a shipped segment, where one is (a real folder, never a link)."""
        path = self.folder / arrival_name(segment, rank, round_)
        try:
            return path if stat.S_ISDIR(os.lstat(path).st_mode) else None
        except OSError:
            return None

    def close(self) -> None:
        """The server stops and every transfer in flight is cut; its threads are joined."""
        self.closing.set()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
        with self.lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=IO_SECONDS)


def refusal(files: list[tuple[str, int]]) -> str | None:
    names = [name for name, _ in files]
    if len(set(names)) != len(names) or not all(SEGMENT_FILE.fullmatch(name) for name in names):
        return f"with files named {sorted(names)[:3]}, which no segment holds"
    return None


def parse_header(facts: Any) -> tuple[int, int, int, list[tuple[str, int]]]:
    numbers = [facts["segment"], facts["rank"], facts["round"]]
    files = [(name, size) for name, size in facts["files"]]
    if not all(type(n) is int and n >= 0 for n in numbers + [size for _, size in files]):
        raise ValueError("not a transfer")
    if not all(isinstance(name, str) for name, _ in files):
        raise ValueError("not a transfer")
    return numbers[0], numbers[1], numbers[2], files


# ----------------------------------------------------------------------------- the worker's side
def fetch_job(board: Any, folder: Path) -> dict[str, Any]:
    """The job as the writer published it: from the run's folder where this machine sees it,
    else from the writer's intake; its `intake` entry says which and where."""
    pointer = board.job_pointer()
    shared = sees_folder(folder, pointer["token"])
    if shared:
        blob = (folder / INCOMING / JOB).read_bytes()
    elif pointer["port"] is None:
        raise WorkerError("this worker does not see the run's folder and the writer serves no intake; start it on "
                          "the first machine")  # fmt: skip
    else:
        blob = download_job(board.host, pointer["port"], board.secret)
    if hashlib.sha256(blob).hexdigest() != pointer["sha256"]:
        raise WorkerError("the job this worker read is not the one the writer published; is another run's folder "
                          "at the same path?")  # fmt: skip
    return {**json.loads(blob), "intake": {"token": pointer["token"], "port": pointer["port"]}}


def download_job(host: str, port: int, secret: str) -> bytes:
    key, header = secret.encode(), json.dumps({"want": "job"}).encode()
    with socket.create_connection((host, port), timeout=IO_SECONDS) as connection:
        nonce = send_header(connection, key, header)
        (size,) = struct.unpack("<Q", receive_exactly(connection, 8))
        if size > JOB_BYTES:
            raise WorkerError(f"the writer's intake offered a job of {size} bytes; is something else at its port?")
        blob = receive_exactly(connection, size)
        if not hmac.compare_digest(receive_exactly(connection, 32), sign(key, b"job", nonce, blob)):
            raise WorkerError("the job from the writer's intake was not signed with the run's secret")
    return blob


def deliver(built: Path, segment: int, rank: int, round_: int, intake: dict[str, Any], host: str, secret: str,
            shared: bool, midway: Callable[[], None] = lambda: None) -> None:  # fmt: skip
    """A whole segment built in `built` to the writer: renamed into the run's `incoming/` where
    this machine sees it (`built` is there already), else streamed to the intake and removed."""
    if shared:
        built.replace(built.parent / arrival_name(segment, rank, round_))
        return
    try:  # (fetch_job has refused a worker that neither sees the folder nor has an intake to reach)
        upload(host, intake["port"], secret, segment, rank, round_, built, midway)
    finally:
        shutil.rmtree(built, ignore_errors=True)


def upload(host: str, port: int, secret: str, segment: int, rank: int, round_: int, folder: Path,
           midway: Callable[[], None] = lambda: None) -> None:  # fmt: skip
    """The segment's files, signed with the run's secret, to the writer's intake. `midway` is
    called once its first file is sent, the rest not (failpoint stream)."""
    files = sorted((path.name, path.stat().st_size) for path in folder.iterdir())
    header = json.dumps({"segment": segment, "rank": rank, "round": round_, "files": files}).encode()
    key = secret.encode()
    with socket.create_connection((host, port), timeout=IO_SECONDS) as connection:
        nonce = send_header(connection, key, header)
        body = hmac.new(key, b"body" + nonce + header, hashlib.sha256)
        for number, (name, _) in enumerate(files):
            with open(folder / name, "rb") as file:
                while chunk := file.read(CHUNK):
                    body.update(chunk)
                    connection.sendall(chunk)
            if number == 0:
                midway()
        connection.sendall(body.digest())
        answer = receive_exactly(connection, 2)
    if answer != b"OK":
        raise WorkerError(f"the writer refused segment {segment} ({answer.decode(errors='replace')})")


def send_header(connection: socket.socket, key: bytes, header: bytes) -> bytes:
    """A request's header, signed over the intake's nonce (returned: the rest is signed over it too)."""
    nonce = receive_exactly(connection, 32)
    connection.sendall(struct.pack("<I", len(header)) + header + sign(key, b"head", nonce, header))
    return nonce


def sign(key: bytes, kind: bytes, nonce: bytes, header: bytes) -> bytes:
    return hmac.new(key, kind + nonce + header, hashlib.sha256).digest()


def receive_exactly(connection: socket.socket, size: int, deadline: float | None = None) -> bytes:
    return b"".join(receive_stream(connection, size, deadline))


def receive_stream(connection: socket.socket, size: int, deadline: float | None = None) -> Iterator[bytes]:
    """`size` bytes as they come; by `deadline` (time.monotonic) in all, where one is given."""
    left = size
    while left:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the peer took too long")
            connection.settimeout(remaining)
        chunk = connection.recv(min(left, CHUNK))
        if not chunk:
            raise ConnectionError("the peer closed the connection mid-transfer")
        left -= len(chunk)
        yield chunk
