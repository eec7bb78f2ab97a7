"""Exclusive flocks that say a process is alive: the kernel lets go when its holder dies, SIGKILL included.

The worker's job folders, the exporter's staging folders and local storage's temp and lock files are
swept only when nobody holds their lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def hold(path: Path, *, wait: bool, folder: bool = False, create: bool = False) -> int | None:
    """An fd of `path` holding its exclusive flock, or None when another holds it and `wait` is false.
    `create` makes a missing file (mode 600). Errors opening or locking it (no such path, not a folder
    when `folder`, a filesystem without locks) raise."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECTORY if folder else 0) | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
