"""vsrpp as a library: what the `upscale` command does, as a function, and an `Upscaler` for
frames that come from elsewhere (a VapourSynth or FFmpeg pipeline, a notebook, a GUI).

Both run on the engine the command runs on (windows with context, tiles, precision, the fp32
fallback), and raise the command's errors: every one a `VsrppError` whose message says what to
do.

    import vsrpp_cli
    summary = vsrpp_cli.upscale("in.mp4", "out.mp4", model="reds4", chunk_frames=16)

    upscaler = vsrpp_cli.Upscaler(model="reds4", device="cuda")
    for big in upscaler.frames(small_frames):   # numpy (h, w, 3) uint8/uint16, or torch (3, h, w)
        ...
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .cli.core import check_tiles
from .errors import UsageError, WorkerError
from .run.engine import build_engine, check_backend, pick_device, pick_dtype
from .run.jobs import check_encoder
from .run.launch import Launch
from .run.pipeline import Options, Summary
from .run.pipeline import upscale as run_upscale
from .run.windows import batches, windows_as_read
from .video.info import Frame
from .weights.zoo import resolve_weights

LAUNCH_OPTIONS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port", "rdzv_endpoint",
                  "max_restarts")  # fmt: skip


def upscale(
    input: str | Path,
    output: str | Path,
    *,
    model: str | None = None,
    weights: str | Path | None = None,
    on_progress: Callable[[float, int | None], None] | None = None,
    notice: Callable[[str], None] | None = None,
    **options: Any,
) -> Summary:
    """`vsrpp upscale INPUT OUTPUT` with the command's options as keyword arguments (the same
    names, underscores for dashes, the same defaults): e.g. `chunk_frames=16`, `codec="libx265"`,
    `overwrite=True`, `nproc_per_node=2`. Returns the run's summary; raises VsrppError.

    `on_progress(done, total)` hears frames done (fractions within a window) and the total (None
    where the container states none); `notice(message)` hears each notice of the run."""
    known = {f.name for f in fields(Options)} - {"weights"}
    unknown = sorted(set(options) - known - set(LAUNCH_OPTIONS))
    if unknown:
        raise UsageError(f"upscale() takes no option {unknown[0]!r}; the options are {', '.join(sorted(known))}")
    options = checked("upscale", options)
    check_tiles(options.get("tile", 0), options.get("tile_overlap", 16))
    check_encoder([Path(output)], *(options.get(name) for name in ("codec", "crf", "preset", "pix_fmt", "format")))
    if options.get("nproc_per_node", 1) > 1 and _inheriting():
        os._exit(1)  # a worker importing the script that launched it: the launcher says what to add (below)
    launch = {name: options.pop(name) for name in LAUNCH_OPTIONS if name in options}
    where = Launch(nproc=launch.pop("nproc_per_node", 1), **launch)
    chosen = resolve_weights(model, Path(weights) if weights is not None else None, progress=False)
    run_options = Options(weights=chosen, **{k: v for k, v in options.items() if k in known})
    try:
        return run_upscale(
            Path(input),
            Path(output),
            run_options,
            on_progress or (lambda done, total: None),
            notice or (lambda message: None),
            where,
        )
    except WorkerError as error:
        if not error.before_start or not getattr(sys.modules["__main__"], "__file__", None):
            raise
        raise UsageError(
            "the workers stopped before they began: a script that calls vsrpp_cli.upscale(..., nproc_per_node=N) "
            'must call it under `if __name__ == "__main__":` (each worker imports the script again)'
        ) from None


# The command's own names where the library's differ.
COMMAND_NAMES = {"format": "output_format"}


def checked(command: str, options: dict[str, Any]) -> dict[str, Any]:
    """Keyword options as the command takes them: each converted and checked by the command's own
    declaration (cli/definition.py: its type, range and choices), so that the library refuses
    what the command refuses, with a VsrppError that names the option."""
    import typer

    from .cli.definition import click_group

    declaration = click_group().commands[command]
    declared = {param.name: param for param in declaration.params}
    context = typer.Context(declaration)
    out = {}
    for name, value in options.items():
        param = declared.get(COMMAND_NAMES.get(name, name))
        if param is None or value is None:
            out[name] = value
            continue
        flag = bool(getattr(param, "is_flag", False))
        if isinstance(value, bool) != flag:  # (the command's parsing would take 1 for True, True for 1)
            raise UsageError(f"{name}={value!r}: give {'True or False' if flag else 'a number or a name, not a bool'}")
        try:
            out[name] = param.process_value(context, value)
        except typer.BadParameter as error:
            raise UsageError(f"{name}={value!r}: {error.message}") from None
    return out


def _inheriting() -> bool:
    """This process is a worker still importing the script of the process that started it
    (multiprocessing's spawn, as its own start-up check knows it)."""
    import multiprocessing

    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


class Upscaler:
    """BasicVSR++ on frames you bring, streamed: `frames()` holds one window (chunk_frames +
    2 * chunk_overlap frames) at most, and each output frame comes out at most one window plus
    its overlap (and 3 frames, finding cuts) after its input went in.

    Frames are numpy arrays (h, w, 3) RGB, uint8 or uint16 (16-bit samples), or torch tensors
    (3, h, w): uint8, or float in [0, 1] (run at 16-bit precision); frames come out in the form
    they went in, 4x larger for the x4 models.

    Shots: `scene_cuts="auto"` finds hard cuts as the frames arrive (3 frames later) and no window
    reaches across one; "off" runs straight through; a list of frame numbers gives the cuts.

    upscaler = Upscaler(model="reds4", device="cuda", chunk_frames=32, chunk_overlap=8)
    out = upscaler.tensor(clip)          # (t, 3, h, w) -> (t, 3, 4h, 4w), the whole clip at once
    """

    def __init__(
        self,
        model: str | None = None,
        weights: str | Path | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        chunk_frames: int = 32,
        chunk_overlap: int = 8,
        tile: int = 0,
        tile_overlap: int = 16,
        batch: int = 1,
        strength: float = 1.0,
        graphs: bool = True,
        deform_backend: str = "auto",
        deterministic: bool = False,
        scene_cuts: str | Sequence[int] = "auto",
        notice: Callable[[str], None] | None = None,
    ) -> None:
        given = checked("upscale", {"device": device, "precision": precision, "chunk_frames": chunk_frames,
                                    "chunk_overlap": chunk_overlap, "tile": tile, "tile_overlap": tile_overlap,
                                    "batch": batch, "strength": strength, "graphs": graphs,
                                    "deform_backend": deform_backend, "deterministic": deterministic})  # fmt: skip
        device, precision, chunk_frames, chunk_overlap = (given[k] for k in ("device", "precision", "chunk_frames",
                                                                             "chunk_overlap"))  # fmt: skip
        tile, tile_overlap, batch, strength = (given[k] for k in ("tile", "tile_overlap", "batch", "strength"))
        if chunk_frames < 1:
            raise UsageError(f"chunk_frames={chunk_frames}: an Upscaler keeps at least 1 frame a window")
        check_tiles(tile, tile_overlap)
        chosen = resolve_weights(model, Path(weights) if weights is not None else None, progress=False)
        self.device = pick_device(device)
        check_backend(deform_backend, self.device, pick_dtype(precision, self.device))
        options = Options(weights=chosen, device=device, precision=precision, tile=tile, tile_overlap=tile_overlap,
                          batch=batch, strength=strength, graphs=graphs, deform_backend=deform_backend,
                          deterministic=deterministic)  # fmt: skip
        self.engine = build_engine(options, chosen, None, self.device, tile, 0, notice or (lambda m: None), batch)
        self.chunk, self.overlap = chunk_frames, chunk_overlap
        self.scene_cuts = _scene_cuts(scene_cuts)

    @property
    def scale(self) -> int:
        return self.engine.scale

    def frames(self, frames: Iterable[np.ndarray | Tensor]) -> Iterator[np.ndarray | Tensor]:
        """Each frame upscaled, in order, as its window completes."""
        if not isinstance(frames, Iterable) or (isinstance(frames, (np.ndarray, Tensor)) and frames.ndim < 2):
            raise UsageError(f"Upscaler.frames takes frames one after another (a list, an iterator); got {frames!r}")
        form: dict[str, Any] = {}
        arrays = (Frame(index, None, _to_array(frame, form)) for index, frame in enumerate(frames))
        windows, _ = windows_as_read(arrays, self.chunk, self.overlap, self.scene_cuts, None)
        for batch in batches(windows, self.engine.batch):
            depth = 16 if batch[0].items[0].image.dtype == np.uint16 else 8
            for images in self.engine.upscale_windows(batch, depth):
                yield from (_from_array(image, form) for image in images)

    def tensor(self, clip: Tensor) -> Tensor:
        """A whole (t, 3, h, w) clip, uint8 or float in [0, 1], to (t, 3, sh, sw) of the same kind."""
        if clip.dim() != 4 or clip.shape[1] != 3 or clip.numel() == 0:
            raise UsageError(f"Upscaler.tensor takes (t, 3, h, w), each at least 1; got {tuple(clip.shape)}")
        return torch.stack(list(self.frames(clip.unbind(0))))


def _scene_cuts(setting: str | Sequence[int]) -> str | list[int]:
    if isinstance(setting, str):
        if setting not in ("auto", "off"):
            raise UsageError(f"scene_cuts={setting!r}: give 'auto', 'off', or a list of the frames that start a shot")
        return setting
    try:
        cuts = sorted({int(cut) for cut in setting})
    except (TypeError, ValueError):
        raise UsageError(f"scene_cuts={setting!r}: give 'auto', 'off', or a list of frame numbers") from None
    if cuts and cuts[0] < 0:
        raise UsageError(f"scene_cuts: frame {cuts[0]} is before the first (0)")
    return cuts


def _to_array(frame: np.ndarray | Tensor, form: dict[str, Any]) -> np.ndarray:
    """A frame as the engine takes it, (h, w, 3) uint8/uint16; `form` remembers the caller's
    kind and the first frame's size, which every frame must have."""
    array = _as_samples(frame, form)
    size = form.setdefault("size", array.shape[:2])
    if array.shape[:2] != size:
        raise UsageError(
            f"frame {form.get('count', 0)} is {array.shape[1]}x{array.shape[0]}, the first was {size[1]}x{size[0]}: "
            "every frame of an Upscaler's run must be the same size (a new Upscaler.frames() call starts another)"
        )
    form["count"] = form.get("count", 0) + 1
    return array


def _as_samples(frame: np.ndarray | Tensor, form: dict[str, Any]) -> np.ndarray:
    if isinstance(frame, Tensor):
        if frame.dim() != 3 or frame.shape[0] != 3 or frame.numel() == 0:
            raise UsageError(f"a frame tensor is (3, h, w), h and w at least 1; got {tuple(frame.shape)}")
        form.setdefault("tensor", (frame.dtype, frame.device))
        if frame.dtype == torch.uint8:
            return frame.permute(1, 2, 0).cpu().numpy()
        if not frame.is_floating_point():
            raise UsageError(f"a frame tensor is uint8 or float in [0, 1]; got {frame.dtype}")
        low, high = frame.min().item(), frame.max().item()  # (NaN compares false: refused too)
        if not (low >= 0.0 and high <= 1.0):
            raise UsageError(f"a float frame tensor holds values in [0, 1]; got {low:g} to {high:g}")
        scaled = (frame.float() * 65535).round().to(torch.int32)
        return scaled.permute(1, 2, 0).cpu().numpy().astype(np.uint16)
    if not isinstance(frame, np.ndarray):
        raise UsageError(f"a frame is a numpy array (h, w, 3) or a torch tensor (3, h, w); got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype not in (np.uint8, np.uint16) or frame.size == 0:
        raise UsageError(f"a frame array is (h, w, 3) uint8 or uint16 RGB; got {frame.shape} {frame.dtype}")
    return frame if frame.flags.writeable else frame.copy()  # (torch warns of read-only arrays)


def _from_array(image: np.ndarray, form: dict[str, Any]) -> np.ndarray | Tensor:
    if "tensor" not in form:
        return image
    dtype, device = form["tensor"]
    out = torch.from_numpy(image.astype(np.int32) if image.dtype == np.uint16 else image).permute(2, 0, 1)
    if dtype == torch.uint8:
        return out.to(device)
    return (out.float() / 65535).to(device=device, dtype=dtype)


__all__ = ["Upscaler", "upscale"]
