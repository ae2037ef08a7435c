"""Writing files so that nothing is ever half-written: temp file, flush, fsync, rename, fsync the folder."""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call write(file) on a temp file next to `path`, fsync it, rename it over `path`, fsync the folder.

    A crash at any moment leaves `path` either as it was or complete; never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temp, 0o644)  # mkstemp makes it private; the final file is an ordinary one
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except Exception as error:
        Path(temp).unlink(missing_ok=True)
        # One line naming the file; torch.save reports a full disk as a RuntimeError of its zip writer.
        reason = getattr(error, "strerror", None) or (str(error).splitlines() or [type(error).__name__])[0]
        if _disk_full(path.parent):
            reason = f"the disk is full ({reason})"
        message = f"cannot write {path}: {reason}; it is as it was"
        errno = getattr(error, "errno", None)
        raise (OSError(errno, message) if errno else OSError(message)) from error
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def _disk_full(folder: Path, margin: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def write_json(path: str | Path, value) -> Path:
    """`value` as indented JSON, atomically."""
    return atomic_write(path, lambda file: file.write(json.dumps(value, indent=2).encode()))
