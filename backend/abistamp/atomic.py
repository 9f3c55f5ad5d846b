"""Files that appear whole or not at all, and the cleanup of what killed writers left.

Every file abistamp writes for others to read (wheels, sdists, index pages, manifests,
METADATA) is written to a hidden `.NAME.PID.RANDOM.part` beside its target and renamed into
place. The pid in the name lets a later run remove the leftovers of a killed one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(target: Path) -> Iterator[str]:
    """A temporary path beside target: renamed onto it if the block succeeds, removed if not.

    No fsync: the rename is what readers and concurrent writers rely on, and a forced flush of
    a GiB-sized wheel would cost more than writing it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".part",
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
    """Remove `.part` files whose writer (the pid in the name) no longer runs."""
    if not folder.is_dir():
        return
    for part in folder.glob(".*.part"):
        pieces = part.name.rsplit(".", 3)
        if len(pieces) == 4 and pieces[1].isdigit():
            try:
                os.kill(int(pieces[1]), 0)
            except ProcessLookupError:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
            except PermissionError:
                pass
