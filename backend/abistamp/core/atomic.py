"""Files that appear whole or not at all, and the cleanup of what killed writers left.

Every file abistamp writes for others to read (wheels, sdists, index pages, manifests,
METADATA) is written to a hidden `.NAME.OWNER.RANDOM.part` beside its target and renamed into
place. OWNER is `PID_HOST`: the pid lets a later run remove the leftovers of a killed one, and
HOST (a digest of the host name and boot id) keeps it from judging a writer it cannot see: a
container or machine sharing the folder has pids of its own, so its leftovers are removed only
once they are a day old.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(target: Path) -> Iterator[str]:
    """A temporary path beside target: renamed onto it if the block succeeds, removed if not.

    No fsync: the rename is what readers and concurrent writers rely on, and a forced flush of
    a GiB-sized wheel would cost more than writing it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{owner()}.", suffix=".part",
                               dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(target: Path, data: bytes) -> None:
    with replacing(target) as tmp:
        Path(tmp).write_bytes(data)


def write_if_changed(target: Path, data: bytes) -> bool:
    """write_atomic, unless target already holds exactly data; True when it wrote.

    An index page or manifest that is already right keeps its inode and mtime, so a merge or
    a sync to a bucket (`aws s3 sync`, `rsync`) transfers only the pages that changed.
    """
    try:
        if target.stat().st_size == len(data) and target.read_bytes() == data:
            return False
    except OSError:
        pass
    write_atomic(target, data)
    return True


def remove_stale_parts(folder: Path) -> None:
    """Remove `.part` files whose writer (the owner in the name) no longer runs."""
    if not folder.is_dir():
        return
    for part in folder.glob(".*.part"):
        pieces = part.name.rsplit(".", 3)
        if len(pieces) == 4 and owner_gone(pieces[1], part):
            with contextlib.suppress(FileNotFoundError):
                part.unlink()


#: How old another host's leftovers must be before they are removed: no write takes a day.
FOREIGN_STALE_AFTER = 24 * 3600


def owner() -> str:
    """`PID_HOST`, for the names of temporary files and folders (no `.` or `-` in it)."""
    return f"{os.getpid()}_{_host()}"


@functools.lru_cache(maxsize=1)
def _host() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return hashlib.sha256(f"{socket.gethostname()}|{boot}".encode()).hexdigest()[:8]


def owner_gone(text: str, path: Path) -> bool:
    """Whether the writer named `text` (`PID_HOST`, or a bare pid from older names) is gone."""
    pid, _, host = text.partition("_")
    if not pid.isdigit():
        return False
    if host and host != _host():
        # Another machine or container: its pids mean nothing here; only age tells.
        try:
            return time.time() - path.stat().st_mtime > FOREIGN_STALE_AFTER
        except OSError:
            return False
    return not alive(int(pid))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def owned_scratch(out_dir: Path, tag: str = "") -> Iterator[Path]:
    """A private folder in out_dir (same filesystem: the final move is a rename), named
    `.abistamp-{tag}{owner}-tmp...` so that a later run removes what a killed one left."""
    prefix = f".abistamp-{tag}"
    for stale in out_dir.glob(f"{prefix}*-tmp*"):
        if owner_gone(stale.name[len(prefix):].split("-")[0], stale):
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{owner()}-tmp", dir=out_dir) as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive flock on path (created if missing) for the block; the kernel drops it when
    the process dies. `on_wait` is called once if another holder makes us wait."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
