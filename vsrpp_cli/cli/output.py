"""How results look on the terminal: tables on stdout (or stderr beside JSON), progress bars and
notices on stderr. Only rich here: nothing imports torch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

stdout = Console()
stderr = Console(stderr=True)


def notice_printer(quiet: bool) -> Callable[[str], None]:
    def notice(message: str) -> None:
        if not quiet:
            stderr.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)

    return notice


def error_line(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def facts_table(facts: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in facts.items():
        if key == "meta":
            value = ", ".join(f"{k}={_short(v)}" for k, v in value.items()) or "(none)"
        elif isinstance(value, list):
            value = ", ".join(value) or "(none)"
        elif value is None:
            value = "(none)"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), str(value))
    stdout.print(table)


def _short(value: Any, limit: int = 60) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class UpscaleProgress:
    """One bar per file on stderr: frames out of the container's count when it is known, frames/s
    and time left. Ticks come from inside each window (every propagation step), so the bar
    moves and the time left appears long before the first window is finished."""

    def __init__(self, names: list[str], disabled: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]:.2f} fps"),
            TimeRemainingColumn(),
            console=stderr,
            disable=disabled or not stderr.is_terminal,  # (elsewhere rich prints only an empty line)
            transient=True,
        )
        self.names = names
        self.tasks: dict[int, Any] = {}
        self.started: dict[int, float] = {}

    def __enter__(self) -> UpscaleProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update(self, job: int, done: float, total: int | None) -> None:
        now = time.perf_counter()
        if job not in self.tasks:
            self.tasks[job] = self.progress.add_task(self.names[job], total=total, fps=0.0)
            self.started[job] = now
        elapsed = now - self.started[job]
        self.progress.update(self.tasks[job], completed=done, total=total, fps=done / elapsed if elapsed else 0.0)


class ClipProgress:
    """A clips bar on stderr; the context gives a function that advances it by one."""

    def __init__(self, total: int, disabled: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]evaluating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=stderr,
            disable=disabled or not stderr.is_terminal,  # (elsewhere rich prints only an empty line)
            transient=True,
        )
        self.task = self.progress.add_task("clips", total=total)

    def __enter__(self) -> Callable[[], None]:
        self.progress.__enter__()
        return lambda: self.progress.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


def upscale_summary(summary: Any, lost_only: bool = False) -> None:
    """One line per file; what could not be decoded is always said."""
    if not lost_only and summary.written_by:
        stderr.print(f"{summary.frames} frames in {summary.seconds:.1f}s by this machine's workers; "
                     f"{summary.written_by} writes {summary.output}", highlight=False, soft_wrap=True)  # fmt: skip
    elif not lost_only:
        stderr.print(
            f"{summary.frames} frames in {summary.seconds:.1f}s ({summary.fps:.2f} fps) -> {summary.output} "
            f"({summary.output_bytes / 1e6:.1f} MB){shots_note(summary.cuts)}",
            highlight=False,
            soft_wrap=True,
        )
    for lost in summary.lost:
        stderr.print(f"[red]lost:[/] {lost}", highlight=False, soft_wrap=True)


def shots_note(cuts: list[int]) -> str:
    """", 3 shots (cuts at frames 120, 455)": where the windows stopped."""
    if not cuts:
        return ""
    shown = ", ".join(map(str, cuts[:6])) + (", ..." if len(cuts) > 6 else "")
    return f", {len(cuts) + 1} shots (cut{'s' * (len(cuts) > 1)} at frame{'s' * (len(cuts) > 1)} {shown})"


def eval_report(report: Any, facts: dict) -> None:
    channel = "Y" if report.y_channel else "RGB"
    title = f"{report.dataset} ({channel}, crop border {facts['crop_border']})"
    table = Table(title=title, title_justify="left")
    for column in ("clip", "frames", "PSNR", "SSIM"):
        table.add_column(column, justify="left" if column == "clip" else "right")
    for c in report.clips:
        table.add_row(c.clip, str(c.frames), f"{c.psnr:.4f}", f"{c.ssim:.4f}")
    table.add_section()
    table.add_row("average", str(sum(c.frames for c in report.clips)), f"{report.psnr:.4f}", f"{report.ssim:.4f}")
    if "published_psnr" in facts:
        table.add_row(
            f"published ({facts['zoo_model']})", "", f"{facts['published_psnr']:.4f}", f"{facts['published_ssim']:.4f}"
        )
        table.add_row("difference", "", f"{facts['psnr_difference']:+.4f}", f"{facts['ssim_difference']:+.4f}")
    stderr.print(table)


def eval_csv(report: Any) -> str:
    rows = ["clip,frames,psnr,ssim"] + [f"{c.clip},{c.frames},{c.psnr:.4f},{c.ssim:.4f}" for c in report.clips]
    return "\n".join(rows) + "\n"


def bench_table(rows: list[Any], title: str) -> None:
    """One row per measurement. Columns whose value is the same in every row are said once under
    the table rather than repeated (the table then fits 80 columns); `--json` has every field."""
    what = {"model": "model", "pipeline": "pipeline", "stage": None, "encoder": "encoder"}
    cells = []
    for r in rows:
        guard = "" if r.psnr_vs_fp32 is None else f"{r.psnr_vs_fp32:.1f} dB"
        name = what.get(r.what, r.what) or r.stage
        name += ", compiled" if r.compiled else f" {r.stage}" if r.what == "encoder" else ""
        cells.append({
            "what": name,
            "dtype": r.precision,  # (--precision; a short header keeps the table in 80 columns)
            "backend": r.backend,
            "colour": r.colour or "",
            "graphs": "on" if r.graphs else "off",
            "batch": str(r.batch),
            "fps": f"{r.fps:.3f}",
            "ms": f"{r.ms_per_frame:.2f}",
            "GPU MiB": "" if r.peak_gpu_mib is None else f"{r.peak_gpu_mib:.0f}",
            "RSS MiB": f"{r.peak_rss_mib:.0f}",
            "vs fp32": ("NON-FINITE " if not r.finite else "") + guard,
        })  # fmt: skip
    measured = ("what", "fps", "ms", "RSS MiB")
    same = [c for c in cells[0] if c not in measured and len({row[c] for row in cells}) == 1] if len(cells) > 1 else []
    shown = [c for c in cells[0] if c not in same and any(row[c] for row in cells)]
    table = Table(title=title, title_justify="left")
    for column in shown:
        table.add_column(column, justify="left" if column in ("what", "dtype", "backend", "colour") else "right")
    for row in cells:
        table.add_row(*(row[c] for c in shown))
    common = ", ".join(f"{c} {cells[0][c]}" for c in same if cells[0][c])
    if common:
        table.caption = f"every row: {common}"
    stdout.print(table)
    stderr.print(f"device {rows[0].device}, {rows[0].threads} torch threads", highlight=False)


def zoo_table(models: Iterable[dict[str, Any]], folder: str, default: str) -> None:
    table = Table(title=f"BasicVSR++ models (stored in {folder})", title_justify="left")
    for column in ("name", "task", "scale", "size", "here"):
        table.add_column(column, overflow="fold")
    for m in models:
        here = "yes" if m["downloaded"] else ("no" if m["url"] else "by hand")
        name = f"{m['name']}*" if m["name"] == default else m["name"]
        table.add_row(name, m["task"], f"x{m['scale']}", f"{m['parameters'] / 1e6:.1f}M", here)
    table.caption = "* the default. `vsrpp weights list --json` has URLs, checksums, training data and scores."
    stdout.print(table)


def preview_report(report: Any) -> None:
    for path in report.images:
        stdout.print(path, highlight=False, soft_wrap=True)
    for e in report.estimates:
        stderr.print(
            f"[bold]{e.setting}[/]: the whole video in about {_duration(e.whole_video_seconds)} here "
            f"({e.windows} windows of {e.seconds_per_window:.1f} s), about {e.output_bytes / 1e6:,.0f} MB of video",
            highlight=False,
            soft_wrap=True,
        )
        stderr.print(f"  {e.command}", highlight=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


def backends_table(table: dict[str, Any]) -> None:
    """Which deformable-conv backends work, per device and precision (`vsrpp info --backends`)."""
    out = Table(title="deformable-conv backends here", show_lines=False)
    out.add_column("backend", style="bold")
    columns = list(table["works"])
    for column in columns:
        out.add_column(column)
    for name in table["backends"]:
        out.add_row(name, *("yes" if name in table["works"][c] else "-" for c in columns))
    out.add_row("auto picks", *(table["auto"][c] for c in columns), style="italic")
    out.add_row("convolutions", *(table["convolution"][c] for c in columns), style="italic")
    stdout.print(out)
    if "slow" in table["convolution"].values():
        stdout.print("slow: PyTorch's reference convolution here, 40-90x slower than fp32")
