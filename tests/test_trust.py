"""A shared run trusts no one: its store listens on loopback alone on one machine, a client
without the run's secret reads and changes nothing, and the writer stores only the segments the
plan holds, from the worker that claimed them, with exactly the files, frame count and times that
segment must have. Every peer here is a real process on a real TCPStore."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from dataclasses import astuple
from pathlib import Path

import pytest
from harness import run_vsrpp
from media import encode_video, moving_scene

import vsrpp_cli
from vsrpp_cli.errors import WorkerError
from vsrpp_cli.run.coordination import Board, pack
from vsrpp_cli.run.folder import RunFolder
from vsrpp_cli.run.writer import Writer

SECRET = "0123456789abcdef0123"
TIMES = [0, 512, 1024, 2048, 2560, 3584, 4096, 4608]  # 8 frames: 2 segments of 2 windows of 2 frames


def peer(port: int, secret: str, script: str) -> subprocess.CompletedProcess:
    """`script` in a process of its own, with `board` connected to the writer's store."""
    code = textwrap.dedent(f"""
        import json
        from vsrpp_cli.run.coordination import Board, pack
        board = Board.connect("127.0.0.1", {port}, {secret!r})
    """) + textwrap.dedent(script)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def video_segment(times: list[int], sizes: int = 5) -> dict[str, bytes]:
    packets = [[pts, 512, index == 0, sizes] for index, pts in enumerate(times)]
    return {"packets": b"x" * sizes * len(times), "index.json": json.dumps({"packets": packets}).encode()}


def job(frames_folder: bool = False) -> dict:
    return {"segments": 2, "times": TIMES, "container_format": None if frames_folder else "mp4",
            "plan": {"chunk_frames": 2, "windows_per_segment": 2}}  # fmt: skip


@pytest.fixture
def served(tmp_path):
    """The writer's side: its store (as a one-machine shared run serves it) and the run's folder."""
    board = Board.serve(0, SECRET, loopback=True)
    store = RunFolder.open(tmp_path / "run" / ".out.mp4.vsrpp-partial", {}, dict, resume=False, overwrite=False)
    yield board, store
    store.unlock()


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
    board, _ = served
    assert listening_addresses(board.port) == {"0100007F"}  # 127.0.0.1, and no other interface


def test_a_client_without_the_secret_reads_nothing_and_changes_nothing(served):
    board, _ = served
    board.publish_job({"segments": 2})
    board.claim(0, 0, rank=1)
    stranger = peer(board.port, "", """
        store = board.store
        print(json.dumps([store.check([key]) for key in ("job", "claim/0/0", "shipped")]))
        store.set("job", "{}")
        store.set("abort", "1")
        store.append("shipped", "0:0:0 ")
        store.set("segment/0", "1")
    """)
    assert json.loads(stranger.stdout) == [False, False, False]
    assert board.job() == {"segments": 2} and board.shipped() == [] and board.claimed_by(0, 0) == 1
    board.check_abort()  # not stopped


@pytest.mark.parametrize(
    "sent, says",
    [
        ("board.claim(0, 1, 1); board.send(1, {'../../evil': b'x', 'packets': b''}, 1, 0)", "files"),
        ("board.claim(0, 1, 1); board.send(1, {'/tmp/evil': b'x'}, 1, 0)", "files"),
        ("board.claim(0, 5, 1); board.send(5, SEGMENT_A, 1, 0)", "segment 5 that is not in the plan"),
        ("board.claim(0, 1, 0); board.send(1, SEGMENT_B, 1, 0)", "segment 1 that it did not claim in round 0"),
        ("board.send(1, SEGMENT_B, 1, 3)", "did not claim in round 3"),
        ("board.claim(0, 1, 1); board.send(1, SHORT_B, 1, 0)", "with 3 frames where the plan has 4"),
        ("board.claim(0, 0, 1); board.send(0, SEGMENT_B, 1, 0)", "other timestamps than the input's"),
        ("board.claim(0, 0, 1); board.send(0, LYING_A, 1, 0)", "counts 20 bytes of packets where it holds 21"),
        ("board.claim(0, 0, 1); board.store.set('segment/0/0', b'junk'); board.store.set('segment/0', '1');"
         "board.store.append('shipped', '0:1:0 ')", "in a form no worker sends"),
        ("board.store.append('shipped', '../x ')", "which no vsrpp worker sends"),
    ],
)
def test_a_peer_with_the_secret_that_sends_what_the_plan_does_not_hold_stops_the_run(served, sent, says):
    """Named, in one line, with nothing stored and nothing written outside the run's folder."""
    board, store = served
    segments = {
        "SEGMENT_A": video_segment(TIMES[:4]),
        "SEGMENT_B": video_segment(TIMES[4:]),
        "SHORT_B": video_segment(TIMES[4:7]),
        "LYING_A": {**video_segment(TIMES[:4]), "packets": b"x" * 21},
    }
    given = "".join(f"{name} = {pack(files)!r}\n" for name, files in segments.items())
    peer(board.port, SECRET, f"from vsrpp_cli.run.coordination import unpack\n{given}" + "\n".join(
        f"{name} = unpack({name})" for name in segments) + "\n" + sent)  # fmt: skip
    writer = Writer(store, job(), 0, 8, lambda done, total: None)
    with pytest.raises(WorkerError) as refused:
        writer.poll(board, 2)
    message = str(refused.value)
    assert says in message and "\n" not in message
    assert "which no vsrpp worker sends" in message or message.startswith("worker 1 sent segment")
    assert store.closed_segments() == set() and not writer.saved
    root = store.folder.parent
    assert sorted(p.name for p in root.iterdir()) == [store.folder.name]
    assert sorted(p.name for p in store.folder.iterdir()) == ["run.json", "run.lock"]


def test_the_segments_a_worker_claimed_and_made_are_stored(served):
    board, store = served
    peer(board.port, SECRET, f"""
        from vsrpp_cli.run.coordination import unpack
        board.claim(0, 0, 1); board.send(0, unpack({pack(video_segment(TIMES[:4]))!r}), 1, 0)
        board.claim(0, 1, 0); board.send(1, unpack({pack(video_segment(TIMES[4:]))!r}), 0, 0)
    """)
    writer = Writer(store, job(), 0, 8, lambda done, total: None)
    writer.poll(board, 2)
    assert store.closed_segments() == {0, 1} and writer.done == 8


@pytest.mark.parametrize(
    "names, says",
    [
        ([f"{index:08d}.png" for index in range(4)], None),
        ([f"{index:08d}.png" for index in range(5)], "with 5 frames where the plan has 4"),
        (["00000000.png", "00000002.png", "00000001.png", "00000003.png"], "not frames 00000000.png on"),
        (["00000000.png", "00000001.png", "00000002.png", ".hidden"], "not frames 00000000.png on"),
    ],
)
def test_a_frames_segment_is_its_frames_named_in_order(tmp_path, names, says):
    store = RunFolder.open(tmp_path / ".frames.vsrpp-partial", {}, dict, resume=False, overwrite=False)
    board = Board.in_memory()
    writer = Writer(store, job(frames_folder=True), 0, 8, lambda done, total: None)
    board.claim(0, 0, 0)
    board.send(0, dict.fromkeys(names, b"png"), 0, 0)
    if says is None:
        writer.poll(board, 1)
        assert store.closed_segments() == {0} and writer.done == 4
    else:
        with pytest.raises(WorkerError, match=says):
            writer.poll(board, 1)
        assert store.closed_segments() == set()
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
    8 MiB a TCPStore value may hold: the job travels in parts."""
    board, _ = served
    job = {"times": list(range(0, 864_000 * 1001, 1001)), "segments": 27_000}
    board.publish_job(job)
    got = peer(board.port, SECRET, "job = board.job(); print(len(job['times']), job['times'][-1], job['segments'])")
    assert got.stdout.split() == ["864000", str(863_999 * 1001), "27000"]


def held_port_with_a_free_one_before() -> socket.socket:
    """A listening socket whose port's predecessor is free as far as a bind can tell (the port
    before an ephemeral one may be anyone's: once it was the other test process's)."""
    while True:
        holder = socket.create_server(("", 0))
        try:
            socket.create_server(("", holder.getsockname()[1] - 1)).close()
            return holder
        except OSError:
            holder.close()


@pytest.mark.parametrize("taken", ["rendezvous", "writer"])
def test_a_taken_port_on_the_first_machine_is_one_line_at_once(tmp_path, monkeypatch, official_checkpoint, taken):
    """A program that listens on --master-port (or the port after it, the writer's) and never
    answers: refused before any worker starts, never joined as a client."""
    monkeypatch.setenv("VSRPP_RUN_SECRET", SECRET)
    holder = held_port_with_a_free_one_before() if taken == "writer" else socket.create_server(("", 0))
    port = holder.getsockname()[1] - (taken == "writer")
    clip = encode_video(tmp_path / "in.mp4", moving_scene(4, 32, 48))
    result = run_vsrpp("upscale", clip, tmp_path / "out.mp4", "--weights", official_checkpoint(8, 1, True)[0],
                       "--device", "cpu", "--nnodes", "2", "--node-rank", "0", "--master-addr", "127.0.0.1",
                       "--master-port", port)  # fmt: skip
    held = holder.getsockname()[1]
    holder.close()
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"port {held} is taken here" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
