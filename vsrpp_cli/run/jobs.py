"""Several inputs in one command: which output each goes to, and the runs, one per GPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError, VsrppError
from ..video.encode import CONTAINERS, EncoderSettings, check_encoder_settings, container_for
from ..video.images import FRAME_EXTENSIONS
from ..video.inputs import is_video_file
from .launch import Launch
from .pipeline import Options, Summary, upscale


def run_jobs(
    jobs: list[tuple[Path, Path]],
    options: Options,
    launch: Launch | None = None,
    on_progress: Callable[[int, float, int | None], None] = lambda job, done, total: None,
    notice: Callable[[str], None] = lambda message: None,
) -> list[Summary | Exception]:
    """Run every job in turn, each on every worker (one pipeline: several inputs on N GPUs are
    N workers on each input, not one input per GPU). A failing file is reported and the others
    go on."""

    launch = (launch or Launch()).resolved()

    def run_one(number: int) -> Summary | Exception:
        source, target = jobs[number]
        try:
            if launch.node_rank == 0:  # the other machines write nothing there
                target.parent.mkdir(parents=True, exist_ok=True)
            return upscale(source, target, options, lambda d, t: on_progress(number, d, t), notice, launch)
        except VsrppError as error:
            if len(jobs) == 1:
                raise
            return error

    return [run_one(number) for number in range(len(jobs))]


def plan_jobs(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs. One video or frame folder goes to OUTPUT itself; several inputs, or
    a folder of videos, go into OUTPUT as a folder, each under its own name. `-` (standard input
    or output) goes alone."""
    if len(inputs) > 1 and Path("-") in inputs:
        raise UsageError("- (standard input) is one stream: give it as the only INPUT")
    if len(inputs) == 1 and not is_video_folder(inputs[0]):
        return [(inputs[0], output)]
    if output.suffix or str(output) == "-":
        raise UsageError(f"{output}: several inputs need an output folder (a path without an extension)")
    sources: list[Path] = []
    for path in inputs:
        sources.extend(sorted(p for p in path.iterdir() if is_video_file(p)) if is_video_folder(path) else [path])
    jobs = []
    for source in sources:
        suffix = source.suffix.lower() if source.suffix.lower() in CONTAINERS else ".mkv"
        jobs.append((source, output / (source.stem + suffix if source.is_file() else source.name)))
    names = [target for _, target in jobs]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise UsageError(f"two inputs would both be written to {duplicate}; rename one of them")
    return jobs


def is_video_folder(path: Path) -> bool:
    """A folder that holds video files rather than frames."""
    if not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if p.is_file()]
    return not any(p.suffix.lower() in FRAME_EXTENSIONS for p in entries) and any(map(is_video_file, entries))


def check_encoder(
    outputs: list[Path], codec: str | None, crf: int | None, preset: str | None, pix_fmt: str | None,
    stream_format: str | None = None,
) -> None:  # fmt: skip
    """The encoder settings against every container they will go into, before any work starts."""
    formats = {container_for(output, stream_format) for output in outputs}
    if None in formats and any(value is not None for value in (codec, crf, preset, pix_fmt)):
        raise UsageError("--codec, --crf, --preset and --pix-fmt are for video outputs; a frames folder is PNG")
    for container_format in sorted(formats - {None}):
        check_encoder_settings(EncoderSettings(container_format, codec, crf, preset, pix_fmt))
