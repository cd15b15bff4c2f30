"""`vsrpp upscale`: one pipeline at any scale.

A run is a plan (segments of whole windows), workers that each take a whole segment at a time
(decode its frames with context, run its windows, encode it with a fresh encoder, send it), and
a writer that stores what they send in the run's folder and, at the end, joins the segments in
order with the audio and subtitles, into a temporary file moved into place.

One process runs one worker in a thread beside the writer; `--nproc-per-node N` and `--nnodes M`
run N x M worker processes through torch.distributed's elastic launcher (workers.py), and the
writer stays in the launching process of the first machine. Writer and workers meet through
the c10d store (coordination.py). What can be read or written only once (a pipe in or out) goes
in one pass instead, with no run folder (one_pass.py): the same first steps, windows, batches
and engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import OutputError, VsrppError, WorkerError, os_error_advice
from ..video.encode import muxer_target
from ..video.info import Frame
from ..video.inputs import is_one_pass
from ..video.mux import Muxer
from ..video.shots import CutPass, check_setting, cuts_notice
from . import failpoints
from .failpoints import failpoint
from .folder import RunFolder, clean_up, remove
from .launch import Launch, require_secret
from .one_pass import check_one_pass, run_one_pass
from .options import Options, Summary
from .outputs import check_output, finish, join_frame_segments, partial_folder, path_bytes, temporary_path
from .plan import Run, fingerprint, make_job, new_plan, open_run
from .threads import threads_per_process
from .worker import Local
from .workers import run_shared, run_workers_here, work_for_first_machine
from .writer import Writer

Progress = Callable[[float, int | None], None]


def upscale(
    source_path: Path,
    output: Path,
    options: Options,
    on_progress: Progress = lambda done, total: None,
    notice: Callable[[str], None] = lambda message: None,
    launch: Launch | None = None,
) -> Summary:
    launch = (launch or Launch()).resolved()
    check_request(source_path, output, options, launch)
    if launch.node_rank > 0:
        return help_first_machine(source_path, output, options, launch, notice)
    began = time.perf_counter()
    run = open_run(source_path, output, options, launch, notice)
    on_progress(0, run.total)
    summary = run_one_pass(run, on_progress) if run.one_pass else run_in_segments(run, on_progress)
    summary.seconds = time.perf_counter() - began
    summary.output_bytes = 0 if str(output) == "-" else path_bytes(output)
    return summary


def check_request(source_path: Path, output: Path, options: Options, launch: Launch) -> None:
    """What no run can do, refused before anything is read."""
    require_secret(launch)
    check_setting(options.scene_cuts)
    failpoints.start_run()
    if is_one_pass(source_path, output):
        check_one_pass(source_path, output, options, launch)
    if launch.node_rank > 0:
        return  # another machine writes nothing: the first checks the output
    if output.exists() and source_path.exists() and output.resolve() == source_path.resolve():
        raise OutputError(f"{output} is the input itself; choose another output")
    if str(output) != "-":
        check_output(output, options.overwrite)


def help_first_machine(
    source_path: Path, output: Path, options: Options, launch: Launch, notice: Callable[[str], None]
) -> Summary:
    """Machines other than the first run workers only; the first writes the output."""
    began = time.perf_counter()
    notice(f"working for the first machine ({launch.host}); it writes {output.name}")
    local = Local(str(source_path), str(options.weights), str(partial_folder(output)), options.device,
                  threads_per_process(launch.nproc))  # fmt: skip
    reports = work_for_first_machine(local, launch)
    helped = Summary(str(source_path), str(output), written_by=launch.host)
    summarise(helped, reports, 0, notice)
    helped.frames, helped.seconds = sum(r["frames"] for r in reports), time.perf_counter() - began
    return helped


def run_in_segments(run: Run, on_progress: Progress) -> Summary:
    """The plan and the run's folder, the final file opened, the workers, the join."""
    options, summary = run.options, run.summary
    if options.resume and not partial_folder(run.output).exists():
        run.tell(f"--resume: no interrupted run of {run.output.name} was found; starting from the beginning")
    # Frames for the encoder leave the device as YUV when it takes a format colour.py makes;
    # making that encoder refuses bad encoder settings before any work.
    encodes_planes = run.container_format is not None and options.colour == "device"
    target = muxer_target(run.settings, run.info, run.size) if encodes_planes else None
    identity = fingerprint(run, target)
    temporary, made, muxer, folder = temporary_path(run.output), None, None, None
    try:
        # The run's lock first: a run refused because another is live must touch nothing of its.
        folder = RunFolder.open(partial_folder(run.output), identity, lambda: new_plan(run), options.resume,
                                options.overwrite)  # fmt: skip
        made = temporary  # from here this run owns the temporary output (clean_up removes only that)
        muxer = open_output(run, temporary)
        job = make_job(run, folder, identity, target)
        summary.chunk_frames = folder.plan["chunk_frames"]
        writer, reports = work(run, folder, job, on_progress)
        summary.cuts = writer.cuts  # planned, or found by a shared run's pass (one process: summarise)
        join(run, folder, muxer, temporary, writer)
    except OSError as error:
        clean_up(muxer, made, folder, run.tell)
        kept = folder is not None and folder.folder.exists()  # (clean_up removes a folder with nothing in it)
        advice = os_error_advice(error, run.output.parent, f"{run.output.name} or its finished segments", kept)
        if advice is None:
            raise
        raise advice from None
    except BaseException:
        clean_up(muxer, made, folder, run.tell)
        raise
    folder.remove()
    summarise(summary, reports, len(job["committed"]) * folder.plan["windows_per_segment"], run.tell)
    summary.frames = writer.done
    return summary


def open_output(run: Run, temporary: Path) -> Muxer | None:
    """The final file, opened now so that its container and audio settings are refused before
    any work rather than after hours; it is written at the end. A frames folder: made empty."""
    if run.container_format is None:
        remove(temporary)  # a folder left by a killed run
        temporary.mkdir()
        return None
    audio_from = run.source_path if run.source_path.is_file() else None
    return Muxer(temporary, run.settings, run.info, run.size, audio_from, run.tell)


def work(run: Run, folder: RunFolder, job: dict, on_progress: Progress) -> tuple[Writer, list[dict]]:
    """The workers, until every segment is stored: one in a thread here, or processes (with the
    pass that finds the cuts beside them, where they are still to be found)."""
    done = sum(folder.segment_frame_count(segment) for segment in job["committed"])
    cut_pass = CutPass(pass_images(run.source.frames(keep_yuv=True, times=run.times))) if job["cuts_pending"] else None
    try:
        writer = Writer(folder, job, done, run.total, on_progress, run.tell, run.launch.secret, cut_pass)
        # This machine's cores shared among its workers (oversubscribed OpenMP threads spin: threads.py).
        local = Local(str(run.source_path), str(run.options.weights), str(folder.folder), run.options.device,
                      threads_per_process(run.launch.nproc))  # fmt: skip
        if run.shared:
            reports = run_shared(job, local, writer, run.launch)
        else:
            reports = run_workers_here(job, local, writer, run.tell, run.model)
    finally:
        if cut_pass is not None:
            cut_pass.close()
    # (One process knows no count: its segments end where the frames do.)
    if job["times"] and (writer.segments is None or not set(range(writer.segments)) <= folder.closed_segments()):
        raise WorkerError("the workers ended with segments missing; run the same command with --resume")
    return writer, reports


def pass_images(frames: Iterator[Frame]) -> Iterator[Any]:
    """The pictures the cut pass looks at, each past the failpoint `cuts`; the input closed after."""
    try:
        for frame in frames:
            failpoint("cuts")
            yield frame.image
    finally:
        frames.close()  # type: ignore[attr-defined]


def join(run: Run, folder: RunFolder, muxer: Muxer | None, temporary: Path, writer: Writer) -> None:
    """The segments joined in order (packets copied, audio and subtitles beside them) and the
    file moved into place."""
    failpoint("join")
    joining = time.perf_counter()
    if muxer is not None:
        muxer.mux(folder.video_segments())
        muxer.close()
    else:
        join_frame_segments(folder.frame_segments(), temporary)
    failpoint("rename")
    finish(temporary, run.output)
    run.summary.timings = {
        "seconds_saving": round(writer.seconds_saving, 4),
        "segments_saved": len(writer.saved),
        "seconds_joining": round(time.perf_counter() - joining, 4),
        "segments": len(folder.closed_segments()),
    }


def summarise(summary: Summary, reports: list[dict], resumed: int, tell: Callable[[str], None]) -> None:
    summary.windows_resumed = resumed + sum(r["windows_resumed"] for r in reports)
    summary.fp32_fallbacks = sum(r["fp32_fallbacks"] for r in reports)
    summary.tile = min((r["tile"] for r in reports), default=0)
    summary.batch = max((r["batch"] for r in reports), default=1)
    summary.lost = list(dict.fromkeys(line for r in reports for line in r["lost"]))
    found = [r["cuts"] for r in reports if r.get("cuts") is not None]  # found as read (one process)
    if found:
        summary.cuts = found[0]
        if summary.cuts:
            tell(cuts_notice(summary.cuts))
    for message in (m for r in reports for m in r["notices"]):
        tell(message)
    if len(reports) > 1:
        summary.workers = [{**r, "fps": round(r["frames"] / r["seconds"], 3) if r["seconds"] else 0.0}
                           for r in reports]  # fmt: skip


__all__ = ["Options", "Summary", "VsrppError", "upscale"]
