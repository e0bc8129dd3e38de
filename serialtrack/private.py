"""The data dir of `serialtrack up` is private: customer ids live in its SQLite files, the admin
token and the embedded Redis's files in it too."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077


def make_private(data_dir: Path) -> None:
    """Create ``data_dir`` 0700 and take group and other bits off everything already in it (a data
    dir made by an earlier version was 0755 with 0644 files). From here on this process and its
    children (the services, the embedded Redis) create files 0600 and directories 0700."""
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    for root, dirs, files in os.walk(data_dir):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    os.chmod(path, stat.S_IMODE(mode) & 0o700)
            except FileNotFoundError:  # a file removed while we walk (a SQLite journal)
                continue
