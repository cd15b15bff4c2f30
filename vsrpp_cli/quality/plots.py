"""Plots for `eval --plot` and `bench --plot`, drawn with matplotlib (the `plot` extra) and written
whole or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError, os_error_advice


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--plot draws with matplotlib, which is not installed: pip install 'vsrpp[plot]'") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def psnr_per_frame(report: Any, path: Path) -> None:
    """One line per clip: PSNR of each frame; the published average, when known, as a dashed line."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.5), layout="constrained")
    for clip in report.clips:
        axes.plot(range(len(clip.frame_psnrs)), clip.frame_psnrs, marker=".", label=f"{clip.clip} ({clip.psnr:.2f} dB)")
    axes.axhline(report.psnr, color="black", linewidth=1, label=f"average {report.psnr:.2f} dB")
    if report.published:
        published = float(report.published.split("/")[0])
        axes.axhline(published, color="grey", linestyle="--", linewidth=1, label=f"published {published:.2f} dB")
    axes.set(xlabel="frame", ylabel="PSNR (dB)", title=f"{report.dataset} ({'Y' if report.y_channel else 'RGB'})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncols=2)
    _save(plt, figure, path)


def frames_per_second(rows: list[Any], path: Path, title: str) -> None:
    """A bar per configuration of `vsrpp bench`: frames/s, model and pipeline rows."""
    plt = _pyplot()
    shown = [r for r in rows if r.what in ("model", "pipeline")]
    names = [
        f"{r.what} {r.precision} {r.backend}"
        + (" graphs" if r.graphs else "")
        + (f" b{r.batch}" if r.batch > 1 else "")
        + (f" {r.colour}" if r.colour else "")
        + (" compiled" if r.compiled else "")
        for r in shown
    ]
    figure, axes = plt.subplots(figsize=(9, 0.45 * len(shown) + 1.5), layout="constrained")
    bars = axes.barh(
        names, [r.fps for r in shown], color=["tab:blue" if r.what == "model" else "tab:orange" for r in shown]
    )
    axes.bar_label(bars, fmt="%.2f", padding=3, fontsize="small")
    axes.invert_yaxis()
    axes.set(xlabel="frames per second", title=title)
    axes.grid(axis="x", alpha=0.3)
    _save(plt, figure, path)


def _save(plt: Any, figure: Any, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial.png")
    try:
        figure.savefig(partial, dpi=120)
        partial.replace(path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise os_error_advice(error, path.parent, path.name) or error from None
    finally:
        plt.close(figure)
