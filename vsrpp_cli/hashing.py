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
