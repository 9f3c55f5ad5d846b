"""The `abistamp` command line: the work around builds (a matrix of ABIs into a wheelhouse,
stamping, inspecting, repairing, checking environments, uv configuration, merging).

It runs outside build environments and may use the `cli` extra. Nothing in :mod:`abistamp.core`
or :mod:`abistamp.backend` imports from here (tests/test_architecture.py holds that).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from .main import main as _main

    return _main(argv)


__all__ = ["main"]
