"""Small file-system helpers shared by the stages that write atomically (shards, checkpoints)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename into it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(Path(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
