"""What a run is asked to do (Options: the command's and the library's settings) and what it did
(Summary: frames, time, device, notices, each worker's share)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Options:
    weights: Path
    device: str = "auto"
    precision: str = "auto"
    chunk_frames: int = 0  # 0: sized to the device
    chunk_overlap: int = 8
    tile: int = 0
    tile_overlap: int = 16
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    overwrite: bool = False
    resume: bool = False
    colour: str = "device"  # where YUV <-> RGB runs: "device" (with the network) or "swscale" (FFmpeg's, CPU)
    batch: int = 0  # windows per forward; 0: from free memory on CUDA, 1 on CPU
    graphs: bool = True  # CUDA graphs for the propagation steps (CUDA only)
    compile: bool = False  # torch.compile the alignment modules (pays on long runs in bf16 on the CPU)
    deinterlace: str = "auto"  # interlaced input: "auto" (bwdif when the stream is interlaced), "bwdif", "yadif", "off"
    segment_frames: int = 0  # output frames per segment; 0: sizing.plan's default
    strength: float = 1.0  # 0: the source enlarged as the network's skip connection does; 1: the network
    fps: float | None = None  # the frame rate of inputs whose frames carry no times (raw streams, frame folders)
    deterministic: bool | None = None  # the same bits in every process (engine.make_deterministic); None: off
    deform_backend: str = "auto"  # the deformable conv's kernel (network/deform_conv.py)
    format: str | None = None  # what `-` (standard output) is written as (encode.STREAM_FORMATS); None: Matroska
    scene_cuts: str = "auto"  # shots.py: "auto" (found in the frames), "off", or a file of cuts

    def as_job(self) -> dict[str, Any]:
        """As the job carries them to workers (JSON: the weights as a string)."""
        return {**asdict(self), "weights": str(self.weights)}

    @classmethod
    def from_job(cls, values: dict[str, Any]) -> Options:
        return cls(**{**values, "weights": Path(values["weights"])})



@dataclass
class Summary:
    input: str
    output: str
    frames: int = 0
    seconds: float = 0.0
    output_bytes: int = 0
    device: str = ""
    precision: str = ""
    chunk_frames: int = 0
    chunk_overlap: int = 0
    batch: int = 1
    tile: int = 0
    colour: str = ""  # "device" or "swscale"
    windows_resumed: int = 0
    fp32_fallbacks: int = 0
    lost: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)  # each worker's segments, frames and fps
    timings: dict[str, float] = field(default_factory=dict)  # the writer's: saving segments, joining them
    latency_frames: int | None = None  # a one-pass run's largest lag: frames read before a frame came out
    cuts: list[int] = field(default_factory=list)  # the frames that start a shot (windows stop there)
    written_by: str = ""  # another machine's workers: the first machine, which writes the output

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "fps": round(self.fps, 3), "seconds": round(self.seconds, 3)}

    def teller(self, notice: Callable[[str], None]) -> Callable[[str], None]:
        """What a run says: each notice once, kept in the summary and passed to `notice`."""

        def tell(message: str) -> None:
            if message not in self.notices:
                self.notices.append(message)
                notice(message)

        return tell
