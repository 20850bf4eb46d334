"""Files and directories only their owner may read (SPEC §8): the store, the master secret, run directories.

The SQLite store holds the master secret every run token derives from, and a process run's directory holds
its output; both are created 0600 / 0700 whatever the umask. Files and directories pushpool owns that an
older version created with wider modes are tightened when they are opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "narrow", "private_dir", "private_file", "pushpool_home"]

DIR_MODE = 0o700
FILE_MODE = 0o600

log = logging.getLogger("pushpool.files")


def pushpool_home() -> Path:
    """`~/.pushpool`, the directory pushpool owns by default (the store, process runs)."""
    return Path("~/.pushpool").expanduser()


def private_dir(path: Path, *, tighten: bool = True) -> None:
    """Make `path` (and any missing parents) a directory; the ones created here are 0700.

    With `tighten`, an existing `path` with wider modes is narrowed to 0700 too: pass it for directories
    pushpool owns (`~/.pushpool`, the process state directory), not for a directory the user chose to hold
    a store beside other things.
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            directory.mkdir(mode=DIR_MODE)
        _chmod(directory, DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened: set it outright
    if not missing and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")  # as mkdir(exist_ok=True) says
    if tighten and not missing:
        narrow(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist; narrow an existing one of ours to 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        narrow(path, FILE_MODE)
    else:
        os.close(fd)
        _chmod(path, FILE_MODE)


def narrow(path: Path, mode: int) -> None:
    """Take away what `mode` does not grant, on a path this user owns; others' paths are left as they are."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & ~mode == 0:
        return
    log.warning("narrowing %s from %o to %o: it may hold secrets", path, stat.S_IMODE(info.st_mode), mode)
    _chmod(path, stat.S_IMODE(info.st_mode) & mode)


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, mode)
