"""The state of this process that a build borrows: environment variables (set for a block,
then put back) and the CPUs it may use. One way to restore the environment, for the backend's
hooks and the command line's repair alike."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def restored_environ() -> Iterator[None]:
    """Put os.environ back as it was when the block began, whatever the block changed."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@contextlib.contextmanager
def patched_environ(changes: Mapping[str, str]) -> Iterator[None]:
    """Set these variables for the block, then put back what was there (or nothing)."""
    with restored_environ():
        for k, v in changes.items():
            if v == "" and k == "TORCH_NO_COMPILER_WRAPPER":
                os.environ.pop(k, None)  # torch reads any value as "set"
            else:
                os.environ[k] = v
        yield


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
