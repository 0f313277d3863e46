"""One process writes a run folder at a time: an advisory lock on RUN/.lock.

flock locks belong to an open file and vanish with the process that holds them, so a run
killed by SIGKILL never leaves its folder locked. The file holds the holder's pid, for the
message a second process gets."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from federated.config import ConfigError
from utils import runfiles

LOCK_NAME = runfiles.LOCK


class RunLock:
    def __init__(self, folder: Path):
        self.folder = folder
        self._fd: int | None = None
        self._created: list[Path] = []  # folders this lock made, deepest first

    def acquire(self) -> "RunLock":
        """Take the lock (creating the folder), or raise ConfigError naming the holder."""
        path = self.folder / LOCK_NAME
        self._created = [p for p in [self.folder, *self.folder.parents] if not p.exists()]
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise ConfigError(f"run folder {self.folder} is being written by another process (pid {holder}); "
                                  "wait for it to end, or choose another --exp") from None
            # The holder before us may have removed the folder (a run that failed before its
            # first checkpoint): a lock on a deleted file guards nothing, so take the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove_created_folders(self) -> None:
        """Remove the (empty) folders acquire() created: a run that failed before its first
        checkpoint leaves the results root as it found it."""
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:  # not empty, or already gone
                pass

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(folder: Path) -> bool:
    """Whether another process holds the folder's lock now (without creating anything)."""
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
