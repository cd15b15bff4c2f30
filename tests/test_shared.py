"""One video shared among worker processes (`upscale --nproc-per-node N`, `--nnodes M`) through
torch.distributed: the frames, times and audio of a single-process run; machines that share no
folder; a silent worker; the coordination's pieces on a real store."""

from __future__ import annotations

import inspect
import json
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from fractions import Fraction
from multiprocessing import forkserver
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import run_vsrpp
from media import encode_video, moving_scene, probe, read_frames

from vsrpp_cli.errors import WorkerError
from vsrpp_cli.run.coordination import AbortError, Board, Watch
from vsrpp_cli.run.folder import PARTIAL
from vsrpp_cli.run.intake import Intake, upload
from vsrpp_cli.run.launch import (
    WORKER_MODULES,
    Launch,
    caller_name,
    first_host,
    free_port,
    run_workers,
    worker_environment,
)

VFR_PTS = [0, 512, 1024, 2048, 2560, 3584, 4096, 4608, 6144, 6656, 7168, 8192, 9216, 9728, 10240, 11264]
# 4 segments of one window each, so that each of 2 workers takes at least one
WINDOWS = ["--chunk-frames", "4", "--chunk-overlap", "1", "--segment-frames", "4", "-q"]


@pytest.fixture(autouse=True)
def one_thread_each(monkeypatch):
    """Bit-identical means the same arithmetic: torch's CPU convolutions sum in an order that
    depends on the thread count, so the single run and each worker use one thread."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def weights(official_checkpoint) -> Path:
    return official_checkpoint(8, 1, True, seed=4)[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """16 frames at irregular times in a 1/12800 time base, with stereo AAC."""
    path = tmp_path_factory.mktemp("clip") / "vfr.mp4"
    return encode_video(path, moving_scene(16, 32, 48), pts=VFR_PTS, time_base=Fraction(1, 12800), audio_channels=2)


@pytest.fixture(scope="module")
def single(tmp_path_factory, weights, clip) -> Path:
    path = tmp_path_factory.mktemp("single") / "one.mp4"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        assert run_vsrpp("upscale", clip, path, "--weights", weights, *WINDOWS).returncode == 0
    return path


def test_two_workers_give_the_frames_of_one(tmp_path, weights, clip, single):
    """Into a folder that does not exist yet (made, as a single process makes it)."""
    output = tmp_path / "new" / "two.mp4"
    args = ["upscale", clip, output, "--weights", weights, *WINDOWS, "--nproc-per-node", "2", "--device", "cpu"]
    result = run_vsrpp(*args, "--json")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(read_frames(output), read_frames(single))
    assert probe(output) == probe(single)  # every timestamp and audio sample
    assert output.read_bytes() == single.read_bytes()  # the same encoder input per segment: the same file
    facts = json.loads(result.stdout)
    workers = facts["workers"]
    assert [w["rank"] for w in workers] == [0, 1] and sum(w["frames"] for w in workers) == 16 == facts["frames"]
    assert sum(w["segments"] for w in workers) == 4 and all(w["segments"] >= 1 for w in workers)  # both took part
    assert all(w["fp32_fallbacks"] == 0 and w["lost"] == [] for w in workers)
    assert sorted(p.name for p in output.parent.iterdir()) == ["two.mp4"]


def test_two_machines_without_a_shared_folder(tmp_path, monkeypatch, weights, clip, single):
    """Two launches with --nnodes 2 (two machines, here on one): the helper (this process, node
    rank 1) is given an output folder that does not exist there, so it cannot have touched one:
    its segments travel to the writer (a process, node rank 0) over the store; the frames of one
    process. Each machine is given the run's secret. The helper's fork server is warm, as on a
    machine that has run before, and the writer's cold (a torch import behind): the helper's
    worker asks first for a segment whatever the machine's speed."""
    monkeypatch.setenv("VSRPP_RUN_SECRET", "a secret for this test")
    multiprocessing.set_forkserver_preload(WORKER_MODULES)
    forkserver.ensure_running()
    output = tmp_path / "out.mp4"
    port = free_port()
    where = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", port, "--nproc-per-node", "1"]
    args = ["--weights", weights, *WINDOWS, "--device", "cpu", *where]
    elsewhere = tmp_path / "not-on-this-machine" / "out.mp4"
    writer = subprocess.Popen(
        [sys.executable, "-m", "vsrpp_cli", "upscale", clip, output, *map(str, args), "--node-rank", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    helper = run_vsrpp("upscale", clip, elsewhere, *args, "--node-rank", "1", "--json")
    written, stderr = writer.communicate()
    assert writer.returncode == 0, stderr
    assert helper.returncode == 0, helper.stderr
    helped = json.loads(helper.stdout)  # what this machine's workers did, and who writes the output
    assert helped["written_by"] == "127.0.0.1" and helped["frames"] >= 4 and helped["workers"] == []
    assert np.array_equal(read_frames(output), read_frames(single))
    assert probe(output) == probe(single)
    facts = json.loads(written)
    assert [w["rank"] for w in facts["workers"]] == [0, 1] and facts["frames"] == 16
    assert {w["rank"]: w["frames"] for w in facts["workers"]}[1] == helped["frames"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_a_second_run_on_a_live_output_is_refused_and_touches_nothing_of_it(tmp_path, weights, clip):
    """While a run is live (its lock held) and joining its output, a second run on the same
    output, with --resume, --overwrite or neither, and a one-pass run from a pipe, are refused in
    one line, and the live run's folder and temporary outputs stay byte for byte."""
    from vsrpp_cli.run.folder import RunFolder

    for name in ("out.mp4", "frames"):
        output = tmp_path / name
        live = RunFolder.open(tmp_path / f".{name}.vsrpp-partial", {}, dict, resume=False, overwrite=False)
        joining = tmp_path / f".{name}.vsrpp-tmp"
        if name == "frames":
            joining.mkdir()
            (joining / "00000000.png").write_bytes(b"a frame being joined")
        else:
            joining.write_bytes(b"the output being joined")
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        for flags in (["--resume"], ["--overwrite"], []):
            result = run_vsrpp("upscale", clip, output, "--weights", weights, *WINDOWS, *flags)
            assert result.returncode == 1, result.stderr
            assert f"another vsrpp run is writing {name} now" in result.stderr and "Traceback" not in result.stderr
        with open(clip, "rb") as stdin:  # `-`: a one-pass run, as from a pipe
            piped = subprocess.run([sys.executable, "-m", "vsrpp_cli", "upscale", "-", output, "--weights", weights,
                                    *WINDOWS], stdin=stdin, capture_output=True, text=True)  # fmt: skip
        assert piped.returncode == 1 and f"another vsrpp run is writing {name} now" in piped.stderr, piped.stderr
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
        live.unlock()


def test_gpus_asked_for_but_absent(tmp_path, weights, clip):
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs")
    result = run_vsrpp("upscale", clip, tmp_path / "o.mp4", "--weights", weights, "--gpus", "2", "--device", "cuda")
    assert result.returncode == 2
    assert "CUDA device" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_the_input_is_never_the_output(tmp_path, weights, clip):
    copy = tmp_path / "a.mp4"
    copy.write_bytes(clip.read_bytes())
    result = run_vsrpp("upscale", copy, copy, "--weights", weights, "--overwrite", "--gpus", "2", "--device", "cpu")
    assert result.returncode == 1 and "is the input itself" in result.stderr
    assert copy.read_bytes() == clip.read_bytes()


# ----------------------------------------------------------------------------- the pieces
def test_claims_go_to_one_worker_each_round():
    board = Board.in_memory()
    assert board.claim(0, 3, rank=1) and not board.claim(0, 3, rank=0)
    assert board.claim(1, 3, rank=0)  # a restarted round claims afresh
    assert not board.is_saved(3)
    board.mark_saved(3)
    assert board.is_saved(3)


def test_segments_travel_beside_the_store(tmp_path):
    """A machine without the run's folder streams a segment to the writer's intake over TCP,
    signed with the run's secret: 20 MB (more than a TCPStore value may hold) arrive byte for byte
    in the run's incoming/ folder, and no store holds them."""
    intake = Intake(tmp_path, "a secret")
    intake.serve(0)
    built = tmp_path / "built"
    built.mkdir()
    files = {"packets": np.random.default_rng(0).bytes(20 << 20), "index.json": b'{"packets": []}'}
    for name, data in files.items():
        (built / name).write_bytes(data)
    try:
        upload("127.0.0.1", intake.address["port"], "a secret", 5, 1, 0, built)
    finally:
        intake.close()
    arrived = intake.arrived(5, 1, 0)
    assert arrived == tmp_path / "incoming" / "5-1-0" and intake.arrived(5, 0, 0) is None
    assert {path.name: path.read_bytes() for path in arrived.iterdir()} == files
    assert not intake.refusals


def test_a_silent_worker_is_noticed_by_the_writers_clock(monkeypatch):
    """Workers on other machines cannot be watched as processes: the writer goes by a counter
    each one moves every few seconds, timed by the writer's own clock (never a file's time)."""
    monkeypatch.setenv("VSRPP_SILENT_SECONDS", "60")
    now = [1000.0]
    board = Board.in_memory()
    watch = Watch(board, world=3, clock=lambda: now[0])
    board.beat(0), board.beat(1)  # rank 2 has not started yet: nothing to say of it
    watch.check()
    now[0] += 59
    board.beat(0)
    watch.check()
    now[0] += 2  # rank 1 silent for 61 s
    with pytest.raises(WorkerError, match=r"worker 1 has not been heard from for 60 s.*--resume"):
        watch.check()
    board.leave(1)  # done with its claims: its silence is no failure
    watch.check()


def test_each_worker_sees_one_gpu():
    assert worker_environment(2, {}) == {"CUDA_VISIBLE_DEVICES": "2"}
    assert worker_environment(1, {"CUDA_VISIBLE_DEVICES": "3,5"}) == {"CUDA_VISIBLE_DEVICES": "5"}
    assert worker_environment(0, {"CUDA_VISIBLE_DEVICES": ""}) == {}


def test_workers_are_forked_and_see_the_launchers_environment_of_now(tmp_path, monkeypatch):
    """Workers come from the fork server (torch imported there once, not per worker), which keeps
    the environment of the run that started it; each worker sees its launcher's of now."""
    monkeypatch.setenv("VSRPP_PROBE", "first")
    first = run_workers(Launch(nproc=2).resolved(), os.getenv, "VSRPP_PROBE", rendezvous_file=tmp_path / "a")
    assert first == {0: "first", 1: "first"}
    monkeypatch.setenv("VSRPP_PROBE", "second")
    monkeypatch.setenv("VSRPP_OTHER", "x")
    second = run_workers(Launch(nproc=2).resolved(), os.getenv, "VSRPP_PROBE", rendezvous_file=tmp_path / "b")
    assert second == {0: "second", 1: "second"}
    monkeypatch.delenv("VSRPP_OTHER")
    gone = run_workers(Launch(nproc=2).resolved(), os.getenv, "VSRPP_OTHER", rendezvous_file=tmp_path / "c")
    assert gone == {0: None, 1: None}
    parents = run_workers(Launch(nproc=2).resolved(), os.getppid, rendezvous_file=tmp_path / "d")
    assert len(set(parents.values())) == 1 and parents[0] != os.getpid()  # both forked by one fork server
    ranks = run_workers(Launch(nproc=2).resolved(), os.getenv, "RANK", rendezvous_file=tmp_path / "e")
    assert ranks == {0: "0", 1: "1"}  # what the agent sets is kept over the launcher's


def test_a_launch_names_its_rendezvous_events_as_torch_does_without_reading_the_stack(tmp_path, monkeypatch):
    """torch's c10d rendezvous names each event by inspect.stack() (the source of every frame);
    a launch names them from the frames themselves: the same names, no stack read, and torch's
    function back in place afterwards."""
    from torch.distributed.elastic.rendezvous import dynamic_rendezvous

    torchs = dynamic_rendezvous.get_method_name

    def recording(how, depth):
        return how(depth)

    def event(how, depth):
        return recording(how, depth)

    for depth in (1, 2, 3, 10_000):
        assert event(caller_name, depth) == event(torchs, depth)
    reads = []
    stack = inspect.stack
    monkeypatch.setattr(inspect, "stack", lambda *args: reads.append(args) or stack(*args))
    event(torchs, 2)
    assert len(reads) == 2  # the counter sees torch's reads
    reads.clear()
    ranks = run_workers(Launch(nproc=2).resolved(), os.getenv, "RANK", rendezvous_file=tmp_path / "a")
    assert ranks == {0: "0", 1: "1"} and reads == []
    assert dynamic_rendezvous.get_method_name is torchs


def test_where_the_first_machine_is(monkeypatch):
    assert first_host("gpu[03-05,07],cpu1") == "gpu03" and first_host("node7") == "node7"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_NNODES", "4")
    monkeypatch.setenv("SLURM_NODEID", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[03-05,07]")
    where = Launch(nproc=8).resolved()
    assert (where.nnodes, where.node_rank, where.rdzv_endpoint) == (4, 2, "gpu03:29500")
    monkeypatch.delenv("SLURM_JOB_ID")
    with pytest.raises(Exception, match="--master-addr"):
        Launch(nproc=1, nnodes=2).resolved()
    with pytest.raises(Exception, match="--resume continues it"):
        Launch(nproc=1, nnodes=2, master_addr="h", max_restarts=1).resolved()


def test_a_killed_launcher_leaves_no_worker(tmp_path, weights, clip):
    """kill -9 of the launching process: the fork server it started exits, and the workers it
    forked get the parent-death signal: nothing the launcher started outlives it."""
    output = tmp_path / "out.mp4"
    env = {**os.environ, "VSRPP_FAILPOINTS": "send/0@1=stall"}  # rank 0 parks once it has sent a segment
    args = ["upscale", clip, output, "--weights", weights, *WINDOWS, "--nproc-per-node", "2", "--device", "cpu"]
    launcher = subprocess.Popen([sys.executable, "-m", "vsrpp_cli", *map(str, args)], env=env,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    partial = tmp_path / ".out.mp4.vsrpp-partial"
    workers: set[int] = set()
    try:
        while len(workers) < 2:  # forked by the fork server, the launcher's child: its grandchildren
            assert launcher.poll() is None, launcher.communicate()
            workers = set(descendants(launcher.pid)) - set(children(launcher.pid))
            time.sleep(0.01)  # (a spinning poll takes a core from the run it watches)
        while not list(partial.glob("segment_*.json")):
            assert launcher.poll() is None, launcher.communicate()
            time.sleep(0.01)
        started = set(descendants(launcher.pid)) | workers
    finally:
        launcher.kill()
        launcher.wait()
    for pid in started:
        assert wait_gone(pid), f"process {pid} ({command_line(pid)[:80]}) outlived its launcher"


def children(pid: int) -> list[int]:
    """Processes started by the main thread of `pid` (the elastic agent starts its workers there)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def descendants(pid: int) -> list[int]:
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def wait_gone(pid: int) -> bool:
    """Until the process is gone or a zombie (no deadline: a busy machine makes this slow, never failed)."""
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.01)


def test_a_hung_worker_stops_the_run(tmp_path, monkeypatch, weights, clip):
    """A worker that stops answering (SIGSTOP: as a lost machine looks from the writer) is noticed
    by its silence in the store; the run stops with one line, whatever the others are doing."""
    monkeypatch.setenv("VSRPP_FAILPOINTS", "network/1@1=stall")
    monkeypatch.setenv("VSRPP_SILENT_SECONDS", "4")
    output = tmp_path / "out.mp4"
    args = ["upscale", clip, output, "--weights", weights, *WINDOWS, "--nproc-per-node", "2", "--device", "cpu"]
    result = run_vsrpp(*args)
    assert result.returncode == 1
    assert "has not been heard from for 4 s" in result.stderr and "--resume" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not output.exists()


def test_a_seek_that_lands_elsewhere_is_refused(clip):
    """Workers seek by the table of frame times; a first frame that is not the one asked for is an
    error, never a shifted window."""
    from vsrpp_cli.errors import InputError
    from vsrpp_cli.run.reading import FrameReader
    from vsrpp_cli.video.inputs import open_source

    source = open_source(clip)
    times = source.frame_times()
    reader = FrameReader(source, False, times, behind=2)
    assert [f.pts for f in reader.read(5, 8)] == times[5:8]
    assert [f.pts for f in reader.read(6, 10)] == times[6:10]  # read on, from the frames kept
    assert [f.pts for f in reader.read(2, 4)] == times[2:4]  # back: a seek
    wrong = [*times[:9], times[9] + 1, *times[10:]]
    with pytest.raises(InputError, match="seeking to frame 9 gave frame"):
        list(FrameReader(source, False, wrong, behind=2).read(9, 12))


def test_a_worker_whose_main_thread_hangs_stops_the_run_and_resume_finishes_it(tmp_path, monkeypatch, weights, clip,
                                                                                single):  # fmt: skip
    """Its beat thread goes on, so it is heard from; its progress does not move, so the writer
    stops the run at the worker's deadline with one line; the same command with --resume then
    gives the uninterrupted output, and no worker process is left."""
    monkeypatch.setenv("VSRPP_FAILPOINTS", "network/1@1=hang")
    monkeypatch.setenv("VSRPP_STALL_SECONDS", "15")
    output = tmp_path / "out.mp4"
    args = ["upscale", clip, output, "--weights", weights, *WINDOWS, "--nproc-per-node", "2", "--device", "cpu"]
    result = run_vsrpp(*args)
    assert result.returncode == 1
    # (15 s, or ten times its longest step where a busy machine made that longer)
    assert re.search(r"worker 1 is alive but has made no progress for \d+ s", result.stderr)
    assert "--resume" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not output.exists()
    assert multiprocessing.active_children() == []
    plan = json.loads((tmp_path / ".out.mp4.vsrpp-partial" / "run.json").read_text())["plan"]
    assert plan["deterministic"] is False  # only where asked, shared or not: the plan keeps what it meant
    monkeypatch.delenv("VSRPP_FAILPOINTS")
    assert run_vsrpp(*args, "--resume").returncode == 0
    assert output.read_bytes() == single.read_bytes()


def test_a_worker_done_on_one_of_several_machines_waits_for_the_runs_end():
    """It goes once the writer has every segment (finish) or every worker has left, and is
    stopped by the writer's abort: never left to its own machine's agent's exit barrier."""

    def wait_end(board: Board, outcome: list[str]) -> None:
        try:
            board.wait_end(2)
            outcome.append("went")
        except AbortError:
            outcome.append("stopped")

    for end in ("finish", "everyone left", "abort"):
        board, outcome = Board.in_memory(), []
        for rank in (0, 1):
            board.beat(rank)
        board.leave(0)
        waiting = threading.Thread(target=wait_end, args=(board, outcome), daemon=True)
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive(), end  # worker 1 works on, the segments are not all stored
        if end == "finish":
            board.finish()
        elif end == "everyone left":
            board.leave(1)
        else:
            board.abort("worker 1 has not been heard from")
        waiting.join(60)  # (bounded: a wait that never ends fails the test, not hangs it)
        assert outcome == ["stopped" if end == "abort" else "went"], end


def test_a_worker_that_left_is_not_watched_and_one_that_stalls_is_stopped(monkeypatch):
    """By the writer's clock: a worker's deadline is the floor (loading, compiling) or ten times
    its longest wait between steps seen so far, whichever is longer."""
    monkeypatch.setenv("VSRPP_STALL_SECONDS", "30")
    monkeypatch.setenv("VSRPP_SILENT_SECONDS", "1000")
    now = [0.0]
    board = Board.in_memory()
    watch = Watch(board, world=2, clock=lambda: now[0])
    for rank in (0, 1):
        board.beat(rank)
    watch.check()
    for second in range(1, 9):  # rank 0 steps every 4 s; rank 1 steps, then leaves
        now[0] = 4.0 * second
        board.set_within(0, second), board.set_within(1, second)
        board.beat(0), board.beat(1)
        watch.check()
    board.leave(1)
    now[0] += 39  # rank 0: 39 s without a step, under 10 x 4 s
    board.beat(0)
    watch.check()
    now[0] += 2  # 41 s
    board.beat(0)
    with pytest.raises(WorkerError, match=r"worker 0 is alive but has made no progress for 40 s"):
        watch.check()


def test_workers_without_the_runs_folder_spool_apart():
    """Each its own folder: one that runs out of segments and removes its empty spool cannot take
    a neighbour's from under it."""
    from vsrpp_cli.run.folder import Spool
    from vsrpp_cli.run.segments import spool_folder

    first, second = spool_folder("run", 0), spool_folder("run", 1)
    assert first != second and first.is_dir() and second.is_dir()
    Spool(second).save_window(3, [np.zeros((4, 4, 3), np.uint8)])
    first.rmdir()  # what worker 0 does when it ends with nothing stored
    assert Spool(second).stored_windows() == [3]
    Spool(second).drop_windows([3])
    second.rmdir()


def test_a_worker_killed_mid_transfer_leaves_nothing_of_it_and_resume_finishes_the_run(
    tmp_path, monkeypatch, weights, clip, single
):
    """The second machine's worker is killed with its first segment's first file sent to the
    writer's intake (failpoint stream): nothing of that segment is kept, the run stops with one
    line on each machine, and both launched again with --resume give the frames of one process.
    The first machine's worker hangs in its second window, so that the second's, slower to start
    (a fresh process), has segments left to take whatever the machine's speed."""
    monkeypatch.setenv("VSRPP_RUN_SECRET", "a secret for this test")
    monkeypatch.setenv("VSRPP_SILENT_SECONDS", "5")  # (the writer's clock on a worker gone without a word)
    output, partial = tmp_path / "out.mp4", tmp_path / ".out.mp4.vsrpp-partial"
    elsewhere = tmp_path / "not-on-this-machine" / "out.mp4"

    def both_machines(*flags: str, second_env: dict[str, str]) -> tuple:
        where = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", free_port(), "--nproc-per-node", "1"]
        args = ["--weights", weights, *WINDOWS, "--device", "cpu", *where, *flags]
        second = subprocess.Popen([sys.executable, "-m", "vsrpp_cli", "upscale", clip, elsewhere, *map(str, args),
                                   "--node-rank", "1"], stderr=subprocess.PIPE, text=True, env=second_env)  # fmt: skip
        first = run_vsrpp("upscale", clip, output, *args, "--node-rank", "0", "--json")
        _, second_stderr = second.communicate()
        return first, second.returncode, second_stderr

    killed = {**os.environ, "VSRPP_FAILPOINTS": "stream/1@1=crash"}
    monkeypatch.setenv("VSRPP_FAILPOINTS", "network/0@2=hang")
    first, second_code, second_stderr = both_machines(second_env=killed)
    monkeypatch.delenv("VSRPP_FAILPOINTS")
    assert first.returncode == 1 and "--resume" in first.stderr and len(first.stderr.strip().splitlines()) == 1
    assert second_code == 1 and "worker 1" in second_stderr and "signal 9" in second_stderr, second_stderr
    assert not output.exists()
    # Nothing of worker 1's segment; of worker 0's, at most the one its hung thread was building.
    kept = [p.name for p in partial.rglob("*") if p.name.endswith(PARTIAL) or "-1-" in p.name]
    assert all(re.fullmatch(r"\d+-0-0" + re.escape(PARTIAL), name) for name in kept) and len(kept) <= 1, kept
    resumed, second_code, second_stderr = both_machines("--resume", second_env=dict(os.environ))
    assert resumed.returncode == 0 and second_code == 0, (resumed.stderr, second_stderr)
    assert np.array_equal(read_frames(output), read_frames(single))
    assert probe(output) == probe(single)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
