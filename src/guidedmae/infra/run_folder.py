"""A run owns its folder: an exclusive lock for the whole run, no links, the litter of killed runs cleaned.

    with lock_run_folder(out_dir):      # FolderBusy, naming the holder, if another run holds it
        remove_stale_temps(out_dir)     # safe now: no other writer can be at work in the folder
        ...

The lock is guidedmae.infra.files.lock_folder on `out_dir/.lock`, held by the one process that writes (rank 0)
from before it reads the folder until the run ends; the operating system releases it when the process
dies, however it dies, so a killed run never blocks the run that resumes it.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from guidedmae.infra.files import lock_folder, make_folder, remove_temps

__all__ = ["lock_run_folder", "remove_stale_temps"]

# Folders whose temp files (`.<name>.<random>.tmp`, see guidedmae.infra.files.atomic_write) a killed run may
# have left behind, relative to the run folder.
TEMP_FOLDERS = (".", "pictures")


def _refuse_links(out_dir: Path) -> None:
    """A symbolic link in the run folder would take the run's writes (metrics, checkpoints, pictures) to
    its target outside the folder: refused before the run starts, not at its first checkpoint."""
    links = sorted(path for path in out_dir.iterdir() if path.is_symlink())
    if links:
        raise OSError(
            f"{links[0]} is a symbolic link; a run folder holds only its own files and folders: remove it"
        )


@contextmanager
def lock_run_folder(out_dir: Path) -> Iterator[Path]:
    """Hold out_dir's exclusive lock for the block (FolderBusy at once if another process holds it), the
    folder created if needed and checked to hold no symbolic links."""
    out_dir = make_folder(out_dir, "out_dir")
    with lock_folder(out_dir, "run", "out_dir") as path:
        _refuse_links(out_dir)
        yield path


def remove_stale_temps(out_dir: Path) -> list[Path]:
    """Delete the temp files killed writers left in the run folder (checkpoints, config, pictures,
    results: never a complete file). Call it only while holding the folder's lock."""
    return sorted(path for folder in TEMP_FOLDERS for path in remove_temps(Path(out_dir) / folder))
