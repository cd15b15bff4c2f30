"""A file's sha256, read in blocks: how the zoo names and verifies checkpoints (torch.hub's
convention) and how a run's fingerprint knows its weights. No torch here: `weights list` and
`--help` stay quick."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SAMPLE_BYTES = 1 << 20


def sample_sha256(path: str | Path, files: list[Path] | None = None) -> str:
    """What tells one input from another of the same size, quickly at any size: the sha256 of its
    size and its first, middle and last MiB (a frame folder: its files' names and sizes, and the
    first and last file's bytes). Every machine of a shared run must read the same input."""
    digest = hashlib.sha256()
    if files is not None:
        for file in files:
            digest.update(f"{file.name}:{file.stat().st_size}\n".encode())
        for file in files[:1] + files[-1:]:
            digest.update(Path(file).read_bytes())
        return digest.hexdigest()
    size = Path(path).stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
            f.seek(offset)
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()
