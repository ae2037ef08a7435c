"""A run owns its folder: an exclusive lock for the whole run, and the litter of killed runs cleaned.

    with lock_run_folder(out_dir):      # RunFolderBusy, naming the holder, if another run holds it
        remove_stale_temps(out_dir)     # safe now: no other writer can be at work in the folder
        ...

The lock is `fcntl.flock` on `out_dir/.lock`, held by the one process that writes (rank 0) from before
it reads the folder until the run ends. The operating system releases it when the process dies, however
it dies, so a killed run never blocks the run that resumes it. The lock file records who holds it
(host, pid, start time) for the message a second run gets.
"""

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK_FILE", "RunFolderBusy", "lock_run_folder", "remove_stale_temps"]

LOCK_FILE = ".lock"
# Folders whose temp files (`.<name>.<random>.tmp`, see guidedmae.files.atomic_write) a killed run may
# have left behind, relative to the run folder.
TEMP_FOLDERS = (".", "pictures")


class RunFolderBusy(OSError):
    """Another process holds the run folder's lock."""


def _check_run_folder(out_dir: Path) -> Path:
    """out_dir as a folder, created if needed; an error naming it if it is a file or cannot be made."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir={out_dir} is a file, not a folder; choose another out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


@contextmanager
def lock_run_folder(out_dir: Path) -> Iterator[Path]:
    """Hold out_dir's exclusive lock for the block; RunFolderBusy at once if another process holds it."""
    out_dir = _check_run_folder(out_dir)
    path = out_dir / LOCK_FILE
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            raise RunFolderBusy(
                f"{out_dir} is in use by another run (host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
                f"started {holder.get('started', '?')}); wait for it to end, or choose another out_dir"
            ) from None
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(holder).encode(), 0)
        yield path
    finally:
        os.close(handle)  # releases the lock


def _read_holder(handle: int) -> dict:
    try:
        return json.loads(os.pread(handle, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}


def remove_stale_temps(out_dir: Path) -> list[Path]:
    """Delete the temp files killed writers left in the run folder (checkpoints, config, pictures,
    results: never a complete file). Call it only while holding the folder's lock."""
    stale = sorted(
        path for folder in TEMP_FOLDERS for path in (Path(out_dir) / folder).glob(".*.tmp") if path.is_file()
    )
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
