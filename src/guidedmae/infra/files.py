"""Files the project writes: never half-written (temp file, flush, fsync, rename, fsync the folder), never
through or over a symbolic link, never over an input, and folders that one writer owns at a time.

    with lock_folder(folder, "run", "out_dir"):   # FolderBusy, naming the holder, if another process holds it
        remove_temps(folder)                     # safe now: no other writer can be at work in the folder
        atomic_write(folder / "x.bin", lambda file: file.write(data))
"""

import errno
import fcntl
import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "LOCK_FILE",
    "FolderBusy",
    "atomic_write",
    "check_output",
    "fsync_directory",
    "json_compatible",
    "lock_folder",
    "make_folder",
    "open_no_follow",
    "read_json",
    "remove_temps",
    "write_json",
]

LOCK_FILE = ".lock"


class FolderBusy(OSError):
    """Another process holds a folder's lock; `holder` is what that process recorded (host, pid, started),
    when it is known."""

    holder: dict | None = None


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


def make_folder(folder: str | Path, key: str | None = None) -> Path:
    """`folder`, created with its parents if missing; an error naming it (as `key`=folder, if given) when
    it, or a folder above it, is a file or a symbolic link to nothing (dangling or looping)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        blocking = next(
            (p for p in (*reversed(folder.parents), folder) if os.path.lexists(p) and not p.is_dir()), folder
        )
        what = (
            f"a symbolic link to {os.readlink(blocking)}, which does not exist or loops"
            if blocking.is_symlink() and not blocking.exists()
            else "a file, not a folder"
        )
        named = f"{key}={folder}" if key else str(folder)
        where = named if blocking == folder else f"{named}: {blocking}"
        advice = f"; choose another {key}" if key else ""
        raise NotADirectoryError(f"{where} is {what}{advice}") from error
    return folder


def _link_refused(path: Path) -> OSError:
    return OSError(f"{path} is a symbolic link; expected a plain file: remove the link")


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses a symbolic link as the file itself: what the project writes in its own folders
    must never land in a link's target outside them."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise _link_refused(path) from None


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], durable: bool = True) -> Path:
    """Call write(file) on a temp file next to `path`, fsync it, rename it over `path`, fsync the folder.

    A crash at any moment leaves `path` either as it was or complete; never half-written. `path` must not
    be a symbolic link (renaming over it would silently replace the link, writing through it is refused).
    A failed write is an OSError naming `path` and why (a full disk said so), a Ctrl-C a KeyboardInterrupt
    naming it; either way `path` is as it was. durable=False skips the fsyncs (files that can be written
    again, by the thousand: a power cut may then leave them empty, a kill still never half-written).
    """
    path = Path(path)
    if path.is_symlink():
        raise _link_refused(path)
    make_folder(path.parent)
    try:  # mkstemp: a fresh name, created exclusively (O_EXCL): never another writer's temp file, never a link
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:  # named as the file it was for, not as the temp file it would have been
        raise _write_error(path, getattr(error, "filename", None) or "", error) from error
    try:
        os.chmod(temp, 0o644)  # mkstemp makes it private; the final file is an ordinary one
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as error:
        Path(temp).unlink(missing_ok=True)
        original = _original_error(error)
        if isinstance(original, KeyboardInterrupt):
            raise KeyboardInterrupt(f"interrupted while writing {path}; it is as it was") from error
        if not isinstance(original, Exception):  # SystemExit, GeneratorExit: not a failed write
            raise
        raise _write_error(path, temp, original) from error
    if durable:
        fsync_directory(path.parent)
    return path


def _original_error(error: BaseException) -> BaseException:
    """The error that made a write fail. torch.save reports one its file's write raised (a full disk, a
    Ctrl-C) as a RuntimeError of its zip writer ("unexpected pos 46 vs 0"), raised while handling it."""
    while isinstance(error, RuntimeError) and error.__context__ is not None:
        error = error.__context__
    return error


def _write_error(path: Path, temp: str, error: Exception) -> OSError:
    """One line naming `path` and why writing it failed (a full disk said so), saying that it is as it was."""
    reason = getattr(error, "strerror", None) or (str(error).splitlines() or [type(error).__name__])[0]
    filename = getattr(error, "filename", None)
    if filename not in (None, temp):  # a file `write` read, not ours
        reason = f"{reason}: {filename}"
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or _disk_full(path.parent):
        reason = f"the disk is full ({reason})"
    message = f"cannot write {path}: {reason}; it is as it was"
    return OSError(code, message) if code else OSError(message)


def _disk_full(folder: Path, margin: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def json_compatible(value: Any, non_finite: Callable[[float], object]) -> Any:
    """`value` with every non-finite float (also nested in dicts, lists, tuples) replaced by
    non_finite(float): strict JSON has no NaN or Infinity, and Python's json module writes them bare."""
    if isinstance(value, float) and not math.isfinite(value):
        return non_finite(value)
    if isinstance(value, dict):
        return {key: json_compatible(item, non_finite) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_compatible(item, non_finite) for item in value]
    return value


def read_json(path: str | Path) -> Any:
    """The JSON value a file holds; a ValueError naming the file when it is not UTF-8 JSON (binary, cut)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def write_json(path: str | Path, value: object) -> Path:
    """`value` as indented strict JSON, atomically; non-finite floats (a metric of nothing) become null."""
    text = json.dumps(json_compatible(value, lambda _: None), indent=2, allow_nan=False)
    return atomic_write(path, lambda file: file.write(text.encode()))


def check_output(out: str | Path, inputs: Iterable[str | Path], option: str = "--out") -> None:
    """Refuse an output that is one of the command's inputs (the same file by any name: a symbolic or hard
    link, another spelling), before anything is read or written."""
    for source in inputs:
        try:
            same = os.path.samefile(out, source)
        except OSError:  # one of them does not exist: they cannot be one file
            continue
        if same:
            raise ValueError(
                f"{option} {out} is the input {source}: writing it would destroy it; choose another {option}"
            )


# -- one writer per folder -----------------------------------------------------------------------


@contextmanager
def lock_folder(folder: str | Path, holder: str, option: str) -> Iterator[Path]:
    """Hold `folder`/.lock exclusively for the block; FolderBusy at once, naming the holding process, if
    another holds it ("<folder> is in use by another <holder> ...; ... choose another <option>").

    The lock is `fcntl.flock`: the operating system releases it when the process dies, however it dies, so
    a killed writer never blocks the next one (its lock file is taken over). The file records who holds
    it (host, pid, start time) for the message, and is removed when the block ends.
    """
    path = Path(folder) / LOCK_FILE
    handle = _locked_handle(path, holder, option)
    try:
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        try:
            os.ftruncate(handle, 0)
            os.pwrite(handle, json.dumps(record).encode(), 0)
        except OSError as error:  # a full disk: named here, the folder as it was (the lock file goes)
            raise _write_error(path, "", error) from error
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still holding it: see _locked_handle
        os.close(handle)  # releases the lock


def _locked_handle(path: Path, holder: str, option: str) -> int:
    """A descriptor of `path` holding its exclusive lock. A holder removes the file before it lets go: a
    lock taken on a file that is no longer at `path` is worthless, so it is taken again on the new one."""
    while True:
        handle = open_no_follow(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            found = _read_holder(handle)
            os.close(handle)
            busy = FolderBusy(
                f"{path.parent} is in use by another {holder} (host {found.get('host', '?')}, pid "
                f"{found.get('pid', '?')}, started {found.get('started', '?')}); wait for it to end, or "
                f"choose another {option}"
            )
            busy.holder = found
            raise busy from None
        except BaseException:
            os.close(handle)
            raise
        if _is_at(handle, path):
            return handle
        os.close(handle)


def _is_at(handle: int, path: Path) -> bool:
    try:
        found = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(handle)
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


def _read_holder(handle: int) -> dict:
    try:
        holder = json.loads(os.pread(handle, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}
    return holder if isinstance(holder, dict) else {}  # a lock file someone wrote by hand


def remove_temps(folder: Path) -> list[Path]:
    """Delete the temp files (`.<name>.<random>.tmp`, see atomic_write) killed writers left in `folder`:
    never a complete file. Call it only while holding the folder's lock."""
    stale = sorted(path for path in Path(folder).glob(".*.tmp") if path.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
