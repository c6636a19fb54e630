"""Small file helpers shared by storage, cluster and coordinator state."""

from __future__ import annotations

import os


def atomic_write(path: str, text: str) -> None:
    """Replace `path` with `text` so a crash leaves either the old or the new file, never half
    of one (Kafka's CheckpointFile: write a temp file, fsync it, rename it over the old one,
    fsync the directory so the rename itself survives a power loss)."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        try:
            os.unlink(tmp)  # a full disk must not be left fuller by half a temp file
        except OSError:
            pass
        raise
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def fsync_dir(path: str) -> None:
    """Make the directory's entries (renames, new files) durable (Kafka's Utils.flushDir)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
