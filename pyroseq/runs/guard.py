"""Guards of a run directory: pyroseq writes only into its own runs, and one process trains a run at a time.

Every run directory holds a lock file, ``.pyroseq.lock``, created before anything else is written. Its
presence marks the directory as a pyroseq run: a new run goes only into an empty directory or into one
marked so (a run that failed before its first checkpoint), never into a directory of the user's own files,
nor into the current directory. A process training the run holds an exclusive OS lock (``flock``) on the
file, which the kernel releases when the process ends however it ends (``kill -9`` included), so a lock
left by a dead process never blocks; the file holds the PID of the last process to take the lock, which a
refused process names.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from pyroseq.errors import CheckpointError, RunLockedError, StorageError
from pyroseq.runs.checkpoint import CHECKPOINT

__all__ = ["LOCK", "RunLock", "lock_run", "claim_new_run", "training_holder"]

LOCK = ".pyroseq.lock"


class RunLock:
    """An exclusive lock on a run directory, held until :meth:`release` (or the end of a ``with``)."""

    def __init__(self, fd: int, directory: Path) -> None:
        self._fd: int | None = fd
        self.directory = directory

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(path: Path) -> str:
    """The PID written in the lock file by the process that holds it (it writes just after locking)."""
    for _ in range(20):
        try:
            pid = path.read_text().strip()
        except OSError:
            pid = ""
        if pid:
            return f"PID {pid}"
        time.sleep(0.01)
    return "PID unknown"


def _not_writable(directory: Path, doing: str) -> StorageError:
    return StorageError(
        f"cannot {doing} {directory}: permission denied; make it writable (chmod u+w) or choose another out",
        params=("out",),
    )


def lock_run(directory: str | Path) -> RunLock:
    """Take the exclusive lock of the run ``directory`` (which must exist), or raise.

    Raises:
        RunLockedError: another process holds it; the message names that process's PID.
        StorageError: the directory is not writable.
    """
    directory = Path(directory)
    path = directory / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        raise _not_writable(directory, "write to the run directory") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(
            f"{directory} is being trained by another process ({_holder(path)}); wait for it to end, "
            "stop it, or choose another out",
            params=("out",),
        ) from None
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except BaseException:
        os.close(fd)
        raise
    return RunLock(fd, directory)


def training_holder(directory: str | Path) -> str | None:
    """Which process (``"PID N"``) is training the run ``directory`` now, or None: one that holds its lock.

    Read from the kernel's table of file locks (``/proc/locks``, Linux) without taking any lock, so a
    trainer starting at that moment is never refused; None where there is no such table to read."""
    path = Path(directory) / LOCK
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:  # no lock file (a save_run directory), or not Linux
        return None
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END" ("->" if waiting)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key:
            return f"PID {fields[4]}"
    return None


def claim_new_run(directory: str | Path) -> RunLock:
    """Make ``directory`` the home of a new run and lock it; refuse anything that is not the user's to give.

    The directory may be new, empty, or a pyroseq run that failed before its first checkpoint (its
    ``config.json`` and ``metrics.jsonl`` are pyroseq's to replace). Refused, each with a
    :class:`~pyroseq.errors.PyroseqError` saying what to do: the current directory, a directory that holds
    other files and no lock file (the user's own), one that holds a checkpoint (a run to resume), one
    locked by another process, and one that cannot be written.
    """
    directory = Path(directory)
    if directory.resolve() == Path.cwd().resolve():
        raise StorageError(
            "out names the current directory; give the run a directory of its own (e.g. out=runs/NAME)",
            params=("out",),
        )
    if directory.exists() and not directory.is_dir():
        raise StorageError(f"out={directory} is a file; give the run a directory", params=("out",))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise _not_writable(directory.parent, "create the run directory in") from None
    if not (directory / LOCK).exists() and not (directory / CHECKPOINT).exists():
        try:
            foreign = sorted(p.name for p in directory.iterdir())
        except PermissionError:
            raise StorageError(
                f"cannot list {directory}: permission denied; choose another out", params=("out",)
            ) from None
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise StorageError(
                f"{directory} is not empty and is not a pyroseq run (it holds {shown}); pyroseq writes "
                "only into a new or empty directory: choose another out",
                params=("out",),
            )
    lock = lock_run(directory)
    # Checked under the lock: a run started here meanwhile by another process is seen.
    if (directory / CHECKPOINT).exists():
        lock.release()
        raise CheckpointError(
            f"{directory} already holds a run; pass resume=True to continue it, or choose another out",
            params=("resume", "out"),
        )
    return lock
