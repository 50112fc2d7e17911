"""Small tmpfs mounts for the storage tests (root with CAP_SYS_ADMIN can mount them; elsewhere they skip)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mount_tmpfs(folder: Path, options: str) -> bool:
    """Mount a tmpfs with `options` (e.g. 'size=20m', 'ro,size=1m') on `folder`; False where that is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], check=False)
