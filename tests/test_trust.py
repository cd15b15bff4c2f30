"""A shared run trusts no one: its store listens on loopback alone on one machine, a client
without the run's secret reads and changes nothing (in the store or the writer's intake), and the
writer stores only the segments the plan holds, from the worker that claimed them, with exactly
the files, frame count and times that segment must have. Every peer here has its own real
connections to a real TCPStore and to the intake over TCP."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import textwrap
import threading
import time
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from harness import Result, run_vsrpp
from media import encode_video, moving_scene

import vsrpp_cli
from vsrpp_cli.errors import WorkerError
from vsrpp_cli.run.coordination import Board
from vsrpp_cli.run.folder import RunFolder
from vsrpp_cli.run.intake import Intake, fetch_job, upload
from vsrpp_cli.run.writer import Writer
from vsrpp_cli.video.shots import CutPass

SECRET = "0123456789abcdef0123"
TIMES = [0, 512, 1024, 2048, 2560, 3584, 4096, 4608]  # 8 frames: 2 segments of 2 windows of 2 frames


def peer(port: int, secret: str, script: str, intake: int = 0) -> Result:
    """`script` run as a peer: with `board`, a connection of its own to the writer's store, and
    `send(segment, files, rank, round_)`, which streams files to the writer's intake at port
    `intake` as a worker without the run's folder does, signed with `secret`, then ships them.
    It runs in this process (what is tested crosses the sockets, not a process boundary: a
    process of its own cost a torch import each); what it prints is its stdout."""
    code = textwrap.dedent(f"""
        import hashlib, hmac, json, socket
        from vsrpp_cli.run.coordination import Board
        from vsrpp_cli.run.intake import send_header
        board = Board.connect("127.0.0.1", {port}, {secret!r})

        def send(segment, files, rank, round_):
            header = json.dumps({{"segment": segment, "rank": rank, "round": round_,
                                 "files": [[name, len(data)] for name, data in files.items()]}}).encode()
            key = {secret!r}.encode()
            try:
                with socket.create_connection(("127.0.0.1", {intake})) as connection:
                    nonce = send_header(connection, key, header)
                    body = hmac.new(key, b"body" + nonce + header, hashlib.sha256)
                    for data in files.values():
                        body.update(data)
                        connection.sendall(data)
                    connection.sendall(body.digest())
                    answer = connection.recv(2)
            except OSError:
                answer = b""
            print("intake:", answer)
            if answer == b"OK":
                board.ship(segment, rank, round_)
    """) + textwrap.dedent(script)
    printed: list[str] = []
    exec(code, {"print": lambda *parts: printed.append(" ".join(map(str, parts)))})
    return Result(0, "".join(f"{line}\n" for line in printed), "")


def video_segment(times: list[int], sizes: int = 5) -> dict[str, bytes]:
    packets = [[pts, 512, index == 0, sizes] for index, pts in enumerate(times)]
    return {"packets": b"x" * sizes * len(times), "index.json": json.dumps({"packets": packets}).encode()}


def job(frames_folder: bool = False) -> dict:
    return {"segments": 2, "times": TIMES, "container_format": None if frames_folder else "mp4",
            "plan": {"chunk_frames": 2, "windows_per_segment": 2}}  # fmt: skip


@pytest.fixture
def served(tmp_path):
    """The writer's side: its store (as a one-machine shared run serves it), the run's folder, and
    a writer whose intake serves on loopback (as the first of several machines serves it)."""
    board = Board.serve(0, SECRET, loopback=True)
    store = RunFolder.open(tmp_path / "run" / ".out.mp4.vsrpp-partial", {}, dict, resume=False, overwrite=False)
    writer = Writer(store, job(), 0, 8, lambda done, total: None, secret=SECRET)
    writer.intake.serve(0)
    yield board, store, writer
    writer.intake.close()
    store.unlock()


def kept_in(store: RunFolder) -> list[str]:
    """What the run's folder holds beside its plan and lock (the intake's marker apart)."""
    assert sorted(p.name for p in store.folder.parent.iterdir()) == [store.folder.name]  # nothing beside it
    found = sorted(str(p.relative_to(store.folder)) for p in store.folder.rglob("*"))
    return [name for name in found if not name.startswith("incoming/.run-")]


def listening_addresses(port: int) -> set[str]:
    """Where a TCP port listens on this machine (/proc/net/tcp and tcp6: state 0A)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_one_machines_store_listens_on_loopback_alone(served):
    board, _, _ = served
    assert listening_addresses(board.port) == {"0100007F"}  # 127.0.0.1, and no other interface


def test_a_client_without_the_secret_reads_nothing_and_changes_nothing(served):
    board, store, writer = served
    board.publish_job(writer.intake.publish({"segments": 2}))
    board.claim(0, 0, rank=1)
    stranger = peer(board.port, "", f"""
        from vsrpp_cli.run.intake import download_job
        store = board.store
        print(json.dumps([store.check([key]) for key in ("job", "claim/0/0", "shipped")]))
        store.set("job", "{{}}")
        store.set("abort", "1")
        store.append("shipped", "0:0:0 ")
        send(0, {{"packets": b"x", "index.json": b"{{}}"}}, 1, 0)  # signed with no secret, or a wrong one
        try:
            download_job("127.0.0.1", {writer.intake.address["port"]}, "not the run's secret")
        except Exception as error:
            print("job:", type(error).__name__)
    """, writer.intake.address["port"])
    assert stranger.stdout.splitlines()[0] == "[false, false, false]"
    assert stranger.stdout.splitlines()[1:] == ["intake: b''", "job: ConnectionError"]  # dropped, told nothing
    assert fetch_job(board, store.folder) == {"segments": 2, "intake": {"token": writer.intake.token, "port":
                                                                       writer.intake.address["port"]}}  # fmt: skip
    assert board.shipped() == [] and board.claimed_by(0, 0) == 1
    board.check_abort()  # not stopped
    writer.poll(board, 2)  # and the writer has nothing to say of it
    assert kept_in(store) == ["incoming", "incoming/job.json", "run.json", "run.lock"]


@pytest.mark.parametrize(
    "sent, says",
    [
        ("board.claim(0, 1, 1); send(1, {'../../evil': b'x', 'packets': b''}, 1, 0)", "which no segment holds"),
        ("board.claim(0, 1, 1); send(1, {'/tmp/evil': b'x'}, 1, 0)", "which no segment holds"),
        ("board.claim(0, 1, 1); send(1, {'packets': b'', 'packets': b'', 'x/../index.json': b''}, 1, 0)",
         "which no segment holds"),
        ("board.claim(0, 5, 1); send(5, SEGMENT_A, 1, 0)", "segment 5 that is not in the plan"),
        ("board.claim(0, 1, 0); send(1, SEGMENT_B, 1, 0)", "segment 1 that it did not claim in round 0"),
        ("send(1, SEGMENT_B, 1, 3)", "did not claim in round 3"),
        ("board.claim(0, 1, 1); send(1, SHORT_B, 1, 0)", "with 3 frames where the plan has 4"),
        ("board.claim(0, 0, 1); send(0, SEGMENT_B, 1, 0)", "other timestamps than the input's"),
        ("board.claim(0, 0, 1); send(0, LYING_A, 1, 0)", "counts 20 bytes of packets where it holds 21"),
        ("board.claim(0, 0, 1); send(0, {'packets': b'', 'index.json': b'junk'}, 1, 0)", "an index that is not one"),
        ("board.claim(0, 0, 1); board.ship(0, 1, 0)", "segment 0 that did not arrive"),
        ("board.store.append('shipped', '../x ')", "which no vsrpp worker sends"),
    ],
)
def test_a_peer_with_the_secret_that_sends_what_the_plan_does_not_hold_stops_the_run(served, monkeypatch, sent,
                                                                                      says):  # fmt: skip
    """Named, in one line, with nothing stored and nothing written outside the run's folder."""
    monkeypatch.setattr("vsrpp_cli.run.writer.ARRIVAL_SECONDS", 0)  # (a shipped segment missing: refused at once)
    board, store, writer = served
    segments = {
        "SEGMENT_A": video_segment(TIMES[:4]),
        "SEGMENT_B": video_segment(TIMES[4:]),
        "SHORT_B": video_segment(TIMES[4:7]),
        "LYING_A": {**video_segment(TIMES[:4]), "packets": b"x" * 21},
    }
    given = "".join(f"{name} = {files!r}\n" for name, files in segments.items())
    peer(board.port, SECRET, given + sent, writer.intake.address["port"])
    with pytest.raises(WorkerError) as refused:
        writer.poll(board, 2)
    message = str(refused.value)
    assert says in message and "\n" not in message
    assert "which no vsrpp worker sends" in message or message.startswith("worker 1 sent segment")
    assert store.closed_segments() == set() and not writer.saved
    assert kept_in(store) == ["incoming", "run.json", "run.lock"]  # what arrived went again


def test_the_segments_a_worker_claimed_and_made_are_stored(served):
    board, store, writer = served
    peer(board.port, SECRET, f"""
        board.claim(0, 0, 1); send(0, {video_segment(TIMES[:4])!r}, 1, 0)
        board.claim(0, 1, 0); send(1, {video_segment(TIMES[4:])!r}, 0, 0)
    """, writer.intake.address["port"])
    writer.poll(board, 2)
    assert store.closed_segments() == {0, 1} and writer.done == 8
    assert kept_in(store) == ["incoming", "run.json", "run.lock", "segment_000000.json", "segment_000000.packets",
                              "segment_000001.json", "segment_000001.packets"]  # fmt: skip


def test_a_segment_shipped_before_the_folder_shows_it_is_waited_for(tmp_path, monkeypatch):
    """Renamed into place on another machine sharing the run's folder, a segment may show on the
    writer's machine only later (NFS caches a name's absence): the writer looks again until it
    does, and refuses it only after ARRIVAL_SECONDS."""
    store = RunFolder.open(tmp_path / ".out.mp4.vsrpp-partial", {}, dict, resume=False, overwrite=False)
    board = Board.in_memory()
    writer = Writer(store, job(), 0, 8, lambda done, total: None)
    board.claim(0, 0, 1)
    board.ship(0, 1, 0)
    writer.poll(board, 2)
    assert store.closed_segments() == set()  # not there yet: no verdict
    arrived = writer.intake.folder / "0-1-0"
    arrived.mkdir()
    for name, data in video_segment(TIMES[:4]).items():
        (arrived / name).write_bytes(data)
    writer.poll(board, 2)
    assert store.closed_segments() == {0} and writer.done == 4
    board.claim(0, 1, 1)
    board.ship(1, 1, 0)
    monkeypatch.setattr("vsrpp_cli.run.writer.ARRIVAL_SECONDS", 0)
    with pytest.raises(WorkerError, match="worker 1 sent segment 1 that did not arrive in 0 s"):
        writer.poll(board, 2)
    store.unlock()


@pytest.mark.parametrize(
    "names, says",
    [
        ([f"{index:08d}.png" for index in range(4)], None),
        ([f"{index:08d}.png" for index in range(5)], "with 5 frames where the plan has 4"),
        (["00000000.png", "00000001.png", "00000003.png", "00000004.png"], "not frames 00000000.png on"),
        (["00000000.png", "00000001.png", "00000002.png", ".hidden"], "not frames 00000000.png on"),
        (["00000000.png", "00000001.png", "00000002.png", "00000003.png/"], "which is not a file"),
        (["00000000.png", "00000001.png", "00000002.png", "00000003.png@"], "which is not a file"),
    ],
)
def test_a_frames_segment_is_its_frames_named_in_order(tmp_path, names, says):
    """Delivered as a worker that sees the run's folder delivers it: a folder in the intake."""
    store = RunFolder.open(tmp_path / ".frames.vsrpp-partial", {}, dict, resume=False, overwrite=False)
    board = Board.in_memory()
    writer = Writer(store, job(frames_folder=True), 0, 8, lambda done, total: None)
    board.claim(0, 0, 0)
    arrived = writer.intake.folder / "0-0-0"
    arrived.mkdir()
    for name in names:
        if name.endswith("/"):
            (arrived / name).mkdir()
        elif name.endswith("@"):
            (arrived / name[:-1]).symlink_to(tmp_path / "elsewhere.png")
        else:
            (arrived / name).write_bytes(b"png")
    board.ship(0, 0, 0)
    if says is None:
        writer.poll(board, 1)
        assert store.closed_segments() == {0} and writer.done == 4
        assert sorted(p.name for p in store.segment_path(0).iterdir()) == names
    else:
        with pytest.raises(WorkerError, match=says):
            writer.poll(board, 1)
        assert store.closed_segments() == set() and not arrived.exists()
    store.unlock()


def sockets_listening_here() -> set[str]:
    """The addresses this process listens on (its sockets' inodes matched in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                found.add(fields[1].rsplit(":", 1)[0])
    return found


def test_a_shared_run_on_one_machine_listens_on_loopback_alone(tmp_path, monkeypatch, official_checkpoint):
    """The whole run, looked at while its workers work: the writer's store on 127.0.0.1 and no
    rendezvous port at all (the agent meets its workers through a file in the run's folder)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    clip = encode_video(tmp_path / "in.mp4", moving_scene(8, 32, 48))
    seen: list[set[str]] = []
    summary = vsrpp_cli.upscale(clip, tmp_path / "out.mp4", weights=official_checkpoint(8, 1, True)[0],
                                device="cpu", chunk_frames=2, chunk_overlap=1, segment_frames=2, nproc_per_node=2,
                                on_progress=lambda done, total: seen.append(sockets_listening_here()))  # fmt: skip
    assert summary.frames == 8
    assert seen and all(addresses == {"0100007F"} for addresses in seen[1:]), seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_a_machine_whose_input_differs_only_in_its_bytes_is_refused(tmp_path, official_checkpoint):
    """The same size is not the same input: a copy with one byte changed in the middle is told apart."""
    from vsrpp_cli.errors import InputError
    from vsrpp_cli.run.worker import Local, check_same_input
    from vsrpp_cli.video.inputs import open_source
    from vsrpp_cli.weights.hashing import sample_sha256, sha256_of

    clip = encode_video(tmp_path / "in.mp4", moving_scene(4, 32, 48))
    weights = official_checkpoint(8, 1, True)[0]
    job = {"fingerprint": {"input_size": clip.stat().st_size, "input_sample": sample_sha256(clip),
                           "weights_sha256": sha256_of(weights)}}  # fmt: skip
    local = Local(str(clip), str(weights), str(tmp_path), "cpu", 1)
    check_same_input(open_source(clip), local, job)  # the same file
    other = bytearray(clip.read_bytes())
    other[len(other) // 2] ^= 0xFF
    changed = tmp_path / "elsewhere.mp4"
    changed.write_bytes(bytes(other))
    with pytest.raises(InputError, match="the same size as the first machine's, other bytes"):
        check_same_input(open_source(changed), Local(str(changed), *astuple(local)[1:]), job)


def test_a_job_of_hours_of_frames_travels_whole(served):
    """The frame-time table of 4 hours at 60 fps (864,000 times, about 10 MB of JSON) passes the
    8 MiB a TCPStore value may hold: the job travels beside the store, which holds its digest."""
    board, store, writer = served
    job = {"times": list(range(0, 864_000 * 1001, 1001)), "segments": 27_000}
    board.publish_job(writer.intake.publish(job))
    assert len(board.store.get("job")) < 200  # the store says where it is, no more
    got = peer(board.port, SECRET, """
        from pathlib import Path
        from vsrpp_cli.run.intake import fetch_job
        job = fetch_job(board, Path("not-the-runs-folder"))  # from the intake, over TCP
        print(len(job['times']), job['times'][-1], job['segments'])
    """)
    assert got.stdout.split() == ["864000", str(863_999 * 1001), "27000"]
    assert fetch_job(board, store.folder)["times"] == job["times"]  # read from the run's folder


def held_port_with_free_ones_before(count: int) -> socket.socket:
    """A listening socket whose `count` ports before it are free as far as a bind can tell (the
    port before an ephemeral one may be anyone's: once it was the other test process's)."""
    while True:
        holder = socket.create_server(("", 0))
        try:
            for before in range(1, count + 1):
                socket.create_server(("", holder.getsockname()[1] - before)).close()
            return holder
        except OSError:
            holder.close()


@pytest.mark.parametrize("taken", ["rendezvous", "writer", "intake"])
def test_a_taken_port_on_the_first_machine_is_one_line_at_once(tmp_path, monkeypatch, official_checkpoint, taken):
    """A program that listens on --master-port (or the port after it, the writer's store, or the
    one after that, its intake) and never answers: refused before any worker starts, never joined
    as a client."""
    monkeypatch.setenv("VSRPP_RUN_SECRET", SECRET)
    after = ["rendezvous", "writer", "intake"].index(taken)
    holder = held_port_with_free_ones_before(after)
    port = holder.getsockname()[1] - after
    clip = encode_video(tmp_path / "in.mp4", moving_scene(4, 32, 48))
    result = run_vsrpp("upscale", clip, tmp_path / "out.mp4", "--weights", official_checkpoint(8, 1, True)[0],
                       "--device", "cpu", "--nnodes", "2", "--node-rank", "0", "--master-addr", "127.0.0.1",
                       "--master-port", port)  # fmt: skip
    held = holder.getsockname()[1]
    holder.close()
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"port {held} is taken here" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_segment_whose_shots_the_writer_has_not_found_yet_is_refused(tmp_path):
    """While a shared run's pass for cuts reads on, a segment is taken only once the cuts that
    lay out its windows are known (the workers wait for them): one sent sooner is refused. At the
    pass's end the cuts are in the store for the workers and in run.json for a resume."""
    store = RunFolder.open(tmp_path / ".out.mp4.vsrpp-partial", {}, dict, resume=False, overwrite=False)
    board = Board.in_memory()
    board.publish_job({})
    gate = threading.Event()

    def frames():
        for index in range(len(TIMES)):
            if index == 2:
                gate.wait()  # the pass, slow on a stalled disk, has seen 2 frames
            yield np.full((16, 16), 100, np.uint8)

    cut_pass = CutPass(frames())
    pending = {**job(), "segments": None, "cuts_pending": True, "options": {"chunk_overlap": 1}, "committed": []}
    writer = Writer(store, pending, 0, 8, lambda done, total: None, cut_pass=cut_pass)
    board.claim(0, 0, 1)
    arrived = writer.intake.folder / "0-1-0"
    arrived.mkdir()
    for name, data in video_segment(TIMES[:4]).items():
        (arrived / name).write_bytes(data)
    board.ship(0, 1, 0)
    while cut_pass.progress()[0] < 1:  # (frame 0 decided: the pass waits at the gate)
        time.sleep(0.001)
    with pytest.raises(WorkerError, match="worker 1 sent segment 0 whose shots are not known yet"):
        writer.poll(board, 2)
    assert board.cuts() == (1, [], None) and store.closed_segments() == set()
    gate.set()
    while not cut_pass.progress()[2]:
        time.sleep(0.001)
    writer.poll(board, 2)
    assert board.cuts() == (8, [], 2) and writer.complete() is False
    assert json.loads((store.folder / "run.json").read_text())["plan"]["cuts"] == []
    cut_pass.close()
    store.unlock()


def test_strangers_that_never_prove_themselves_hold_the_intake_for_a_while_only(tmp_path, monkeypatch):
    """Connections that never send the run's signed header, trickling a byte at a time (so that
    no single read times out), are dropped HEADER_SECONDS after they came, and only
    UNPROVED_AT_ONCE are served at once: a worker's transfer waits meanwhile, then goes through."""
    monkeypatch.setattr("vsrpp_cli.run.intake.UNPROVED_AT_ONCE", 2)
    monkeypatch.setattr("vsrpp_cli.run.intake.HEADER_SECONDS", 1.0)
    (tmp_path / "run").mkdir()
    intake = Intake(tmp_path / "run", SECRET)
    intake.serve(0)
    port = intake.address["port"]
    began = time.monotonic()  # (before the strangers: their time runs from when the intake takes them)
    strangers = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(2)]
    for stranger in strangers:
        stranger.recv(32)  # its nonce: it holds a slot
        stranger.sendall(struct.pack("<I", 1000))
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.05):
            for stranger in strangers:
                with contextlib.suppress(OSError):
                    stranger.sendall(b"x")

    trickling = threading.Thread(target=trickle)
    trickling.start()
    built = tmp_path / "built"
    built.mkdir()
    for name, data in video_segment(TIMES[:4]).items():
        (built / name).write_bytes(data)
    try:
        upload("127.0.0.1", port, SECRET, 0, 1, 0, built)
        waited = time.monotonic() - began
        for stranger in strangers:
            with contextlib.suppress(ConnectionResetError):
                assert stranger.recv(1) == b""  # dropped by the intake, though it never fell silent
    finally:
        stop.set()
        trickling.join()
        for stranger in strangers:
            stranger.close()
        intake.close()
    assert waited >= 1.0  # (served only once a stranger's slot was free)
    assert intake.arrived(0, 1, 0) is not None
