"""The model zoo: every official BasicVSR++ checkpoint, fetched once, verified, reused.

Facts (file names, hosts, architectures, training data, scores) from docs/REFERENCE.md section 2,
which gathers them from mmagic's configs/basicvsr_pp README and the authors' repository
(github.com/ckkelvinchan/BasicVSR_PlusPlus). The 8 hex digits before `.pth` are the start of
the file's sha256 (torch.hub's convention), checked on every download and every use.

Where files live: $VSRPP_HOME/weights when set; else the checkout's `weights/` folder when
running from a source checkout; else the user cache ($XDG_CACHE_HOME or ~/.cache)/vsrpp/weights.
$VSRPP_WEIGHTS_URL replaces the download host (mirrors, tests); $VSRPP_MODELS names a JSON file
of extra entries in the same shape as the ones below.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CheckpointError, UsageError, ZooError
from .hashing import sha256_of

OPENMMLAB = "https://download.openmmlab.com/mmediting/restorers/basicvsr_plusplus/"
AUTHORS_FOLDER = "https://www.dropbox.com/sh/gopo637rbutlxde/AACGnXDlvQMjwfCey3m2g34za?dl=0"
DEFAULT_MODEL = "reds4"


@dataclass(frozen=True)
class Model:
    name: str
    file: str
    mid_channels: int
    num_blocks: int
    scale: int  # 4, or 1 for the same-size restoration models
    task: str
    trained_on: str
    base_url: str | None = OPENMMLAB  # None: not on a host we can fetch from automatically
    published_at: str = ""  # where to get it by hand when base_url is None
    scores: dict[str, str] = field(default_factory=dict)  # test set -> "PSNR/SSIM"
    input: str = "RGB video of any size"

    @property
    def sha256_prefix(self) -> str:
        match = re.search(r"-([0-9a-f]{8})\.pth$", self.file)
        if not match:
            raise ZooError(f"{self.file}: the file name carries no sha256 prefix (NAME-xxxxxxxx.pth)")
        return match.group(1)

    def url(self) -> str | None:
        mirror = os.environ.get("VSRPP_WEIGHTS_URL")
        if mirror:
            return mirror.rstrip("/") + "/" + self.file
        return self.base_url + self.file if self.base_url else None


SCORE_SETS = ("REDS4", "Vimeo-90K-T BI", "Vid4 BI", "UDM10 BD", "Vimeo-90K-T BD", "Vid4 BD")


def _scores(*values: str) -> dict[str, str]:
    return dict(zip(SCORE_SETS, values, strict=True))


_SAME_SIZE_INPUT = "RGB video; same size out; frames under 256x256 or not multiples of 4 are padded"
BUILT_IN = [
    Model(
        "reds4",
        "basicvsr_plusplus_c64n7_8x1_600k_reds4_20210217-db622b2f.pth",
        64,
        7,
        4,
        "4x video super-resolution",
        "REDS, bicubic x4 (REDS4 held out)",
        scores=_scores(
            "32.3855/0.9069", "36.4445/0.9411", "27.7674/0.8444", "34.6868/0.9417", "34.0372/0.9244", "24.6209/0.7540"
        ),
    ),
    Model(
        "vimeo90k-bi",
        "basicvsr_plusplus_c64n7_8x1_300k_vimeo90k_bi_20210305-4ef437e2.pth",
        64,
        7,
        4,
        "4x video super-resolution",
        "Vimeo-90K, bicubic x4",
        scores=_scores(
            "31.0126/0.8804", "37.7864/0.9500", "27.7882/0.8401", "33.1211/0.9270", "33.8972/0.9195", "23.6086/0.7033"
        ),
    ),
    Model(
        "vimeo90k-bd",
        "basicvsr_plusplus_c64n7_8x1_300k_vimeo90k_bd_20210305-ab315ab1.pth",
        64,
        7,
        4,
        "4x video super-resolution (blurred sources)",
        "Vimeo-90K, Gaussian blur + x4 downsampling",
        scores=_scores(
            "29.2041/0.8528", "34.7248/0.9351", "26.4377/0.8074", "40.7216/0.9722", "38.2054/0.9550", "29.0400/0.8753"
        ),
    ),
    Model(
        "ntire-vsr",
        "basicvsr_plusplus_c128n25_ntire_vsr_20210311-1ff35292.pth",
        128,
        25,
        4,
        "4x video super-resolution (NTIRE 2021, large)",
        "NTIRE 2021 VSR",
    ),
    Model(
        "ntire-decompress-track1",
        "basicvsr_plusplus_c128n25_ntire_decompress_track1_20210223-7b2eba02.pth",
        128,
        25,
        1,
        "compressed video enhancement (fidelity)",
        "NTIRE 2021, HEVC at fixed QP",
        input=_SAME_SIZE_INPUT,
    ),
    Model(
        "ntire-decompress-track2",
        "basicvsr_plusplus_c128n25_ntire_decompress_track2_20210314-eeae05e6.pth",
        128,
        25,
        1,
        "compressed video enhancement (perceptual)",
        "NTIRE 2021, HEVC at fixed QP",
        input=_SAME_SIZE_INPUT,
    ),
    Model(
        "ntire-decompress-track3",
        "basicvsr_plusplus_c128n25_ntire_decompress_track3_20210304-6daf4a40.pth",
        128,
        25,
        1,
        "compressed video enhancement",
        "NTIRE 2021, x265 at fixed bit-rate",
        input=_SAME_SIZE_INPUT,
    ),
    Model(
        "deblur-dvd",
        "basicvsr_plusplus_deblur_dvd-ecd08b7f.pth",
        64,
        15,
        1,
        "video deblurring",
        "DVD",
        base_url=None,
        published_at=AUTHORS_FOLDER,
        input=_SAME_SIZE_INPUT,
    ),
    Model(
        "deblur-gopro",
        "basicvsr_plusplus_deblur_gopro-3c5bb9b5.pth",
        64,
        15,
        1,
        "video deblurring",
        "GoPro",
        base_url=None,
        published_at=AUTHORS_FOLDER,
        input=_SAME_SIZE_INPUT,
    ),
    Model(
        "denoise",
        "basicvsr_plusplus_denoise-28f6920c.pth",
        64,
        15,
        1,
        "video denoising",
        "DAVIS, Gaussian noise sigma 0 to 50",
        base_url=None,
        published_at=AUTHORS_FOLDER,
        input=_SAME_SIZE_INPUT,
    ),
]


# The flow network BasicVSR++ training starts from (docs/REFERENCE.md section 3).
SPYNET = Model(
    "spynet",
    "spynet_20210409-c6c1bd09.pth",
    0,
    0,
    0,
    "optical flow (SPyNet), for training",
    "",
    base_url="https://download.openmmlab.com/mmediting/restorers/basicvsr/",
)


def models() -> dict[str, Model]:
    """The built-in zoo, plus (or overridden by) the entries of $VSRPP_MODELS."""
    zoo = {model.name: model for model in BUILT_IN}
    extra = os.environ.get("VSRPP_MODELS")
    if extra:
        try:
            entries = json.loads(Path(extra).read_text())
            zoo.update({entry["name"]: Model(**entry) for entry in entries})
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ZooError(f"VSRPP_MODELS={extra}: not a readable list of models ({error})") from None
    return zoo


def get(name: str) -> Model:
    zoo = models()
    if name not in zoo:
        raise ZooError(f"no model named {name!r}; choose one of: {', '.join(zoo)} (see `vsrpp weights list`)")
    return zoo[name]


def weights_dir() -> Path:
    if os.environ.get("VSRPP_HOME"):
        return Path(os.environ["VSRPP_HOME"]) / "weights"
    checkout = Path(__file__).resolve().parents[2]  # vsrpp_cli/weights/zoo.py in a checkout
    if (checkout / "pyproject.toml").is_file() and (checkout / "weights").is_dir():
        return checkout / "weights"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "vsrpp" / "weights"


def path_of(model: Model) -> Path:
    return weights_dir() / model.file


def is_intact(model: Model) -> bool:
    path = path_of(model)
    return path.is_file() and sha256_of(path).startswith(model.sha256_prefix)


def known_file(sha256: str) -> Model | None:
    """The zoo model whose checksum prefix this file's sha256 starts with, if any."""
    return next((m for m in models().values() if sha256.startswith(m.sha256_prefix)), None)


def resolve_weights(
    model: str | None, weights: Path | None, progress: bool = True, notice=lambda message: None
) -> Path:
    """The checkpoint a command runs with: --weights FILE, else --model NAME (fetched once and
    verified), else the default model. Every command that needs weights chooses them here."""
    if weights is not None and model is not None:
        raise UsageError("give either --model NAME or --weights FILE, not both")
    if weights is not None:
        if not weights.is_file():
            raise CheckpointError(f"--weights {weights}: no such file; check the path, or use --model NAME")
        return weights
    return ensure(model or DEFAULT_MODEL, progress, notice)


def ensure(name: str, progress: bool = True, notice=lambda message: None) -> Path:
    """The verified local file of a model, downloading it first when missing or damaged."""
    return ensure_model(get(name), progress, notice)


def ensure_model(model: Model, progress: bool = True, notice=lambda message: None) -> Path:
    path = path_of(model)
    if path.is_file():
        if is_intact(model):
            return path
        notice(f"{path} does not match its checksum ({model.sha256_prefix}...): fetching it again")
        path.unlink()
    return download(model, progress)


def download(model: Model, progress: bool = True) -> Path:
    path = path_of(model)
    url = model.url()
    if url is None:
        raise ZooError(
            f"{model.name} is not on the OpenMMLab download host; its authors publish it at "
            f"{model.published_at} (see github.com/ckkelvinchan/BasicVSR_PlusPlus). Download {model.file} "
            f"from there and place it at {path}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Downloads to a temporary file beside the target, checks the sha256 prefix, then moves
        # it into place; on any failure the temporary file is removed.
        from torch.hub import download_url_to_file  # torch only when something is fetched

        download_url_to_file(url, str(path), hash_prefix=model.sha256_prefix, progress=progress)
    except RuntimeError as error:
        if "invalid hash value" in str(error):
            raise ZooError(
                f"{url}: the file served does not match the checksum in its name ({model.sha256_prefix}...); "
                "nothing was kept. The host or a proxy is serving something else: try again later or "
                "another mirror (VSRPP_WEIGHTS_URL)"
            ) from None
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ZooError(
            f"could not download {model.name} from {url} ({reason}). Without network access, fetch that URL "
            f"elsewhere and place the file at {path}"
        ) from None
    return path


# Parameters per architecture (mid channels, blocks, scale), counted on the network built on the
# meta device (tests/test_zoo.py holds them to it): `weights list` then needs no torch import.
PARAMETERS = {(64, 7, 4): 7_322_927, (128, 25, 4): 43_780_463, (128, 25, 1): 44_075_631, (64, 15, 1): 9_760_175}


def parameter_count(model: Model) -> int:
    known = PARAMETERS.get((model.mid_channels, model.num_blocks, model.scale))
    return known if known is not None else counted_parameters(model)  # a model added by VSRPP_MODELS


def counted_parameters(model: Model) -> int:
    """The count from the network itself, built on the meta device (no memory, no time)."""
    import torch

    from ..network import BasicVSRPlusPlus

    with torch.device("meta"):
        network = BasicVSRPlusPlus(model.mid_channels, model.num_blocks, is_low_res_input=model.scale == 4)
    return sum(p.numel() for p in network.parameters())


def describe(model: Model) -> dict:
    facts = asdict(model)
    facts["parameters"] = parameter_count(model)
    facts.update(sha256_prefix=model.sha256_prefix, url=model.url(), path=str(path_of(model)))
    facts["downloaded"] = path_of(model).is_file()
    return facts
