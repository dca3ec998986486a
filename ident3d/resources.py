"""Free host memory and free disk space, for checking a job's size before anything is written.

Used by ``ident3d latents``, ``ident3d render`` and ``ident3d train`` to refuse sizes that cannot
fit (one line, exit 2) instead of failing half-way. Each returns ``None`` when the figure cannot
be read, and then nothing is refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def available_memory() -> int | None:
    """Bytes of host memory available to a new allocation (Linux ``MemAvailable``, else the
    free physical pages), or ``None``."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path: str | os.PathLike[str]) -> tuple[Path, int] | None:
    """``(folder, free bytes)`` of the file system that ``path`` is or will be on (its nearest
    existing ancestor), or ``None``."""
    base = Path(path) if str(path) else Path(".")
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        return base, shutil.disk_usage(base).free
    except OSError:
        return None
