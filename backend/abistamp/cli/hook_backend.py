"""abistamp's backend as `abistamp build` runs it inside a build environment (see runner.py).

pyproject_hooks calls each hook in a fresh process of the environment's python, and this module
is the backend it imports there, from the private copy of abistamp that `PYTHONPATH` names. It
offers the two hooks `abistamp build` calls and, around abistamp's own, does what only that
process can do:

- die with the `abistamp` process (Linux `PR_SET_PDEATHSIG`), so that a killed run leaves no
  build behind. It is set here and not in a `preexec_fn`, which is unsafe in a process that
  runs threads, as `abistamp build` does;
- import setuptools before packaging: from 71 on, setuptools puts its own copy of packaging on
  `sys.path` when none is installed, and that copy is enough (docs/cli.md, `--python`); say
  what the environment lacks otherwise;
- show the backend's warnings in the log, as Python does: pyproject_hooks would record them and
  warn again in abistamp's process, onto the terminal;
- report to abistamp, as JSON in the file :data:`REPORT` names, the build requirements this
  environment does not meet (markers and versions as its interpreter sees them), or an
  `AbistampError` on one line.

Only the standard library is imported at module level: abistamp's process imports this module
for its names, and setuptools must come first here.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from typing import IO, Any

#: The environment variable naming the report file: `{"unmet": [...]}` after
#: `get_requires_for_build_wheel`, `{"error": "..."}` when the backend raised `AbistampError`.
REPORT = "_ABISTAMP_HOOK_REPORT"
#: The environment variable holding the pid of the abistamp process that started this one.
PARENT = "_ABISTAMP_HOOK_PARENT"


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    requires: list[str] = _call("get_requires_for_build_wheel", config_settings)
    _report({"unmet": _unmet(requires)})
    return requires


def build_wheel(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                metadata_directory: str | None = None) -> str:
    name: str = _call("build_wheel", wheel_directory, config_settings, metadata_directory)
    return name


def _call(hook: str, *args: Any) -> Any:
    """One hook of abistamp's backend; an `AbistampError` goes to the log and the report, and
    ends the process with status 1."""
    _die_with_parent()
    from abistamp.core.errors import AbistampError  # standard library only

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return getattr(_backend(), hook)(*args)
    except AbistampError as e:
        print(f"abistamp: error: {e}", file=sys.stderr)
        _report({"error": e.one_line()})
        raise SystemExit(1) from None


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (ImportError, OSError, AttributeError):
        return  # not Linux: an interrupt still ends the process group (runner.py)
    if os.getppid() != int(os.environ[PARENT]):
        raise SystemExit(1)  # abistamp ended before the call above: nobody waits for this build


def _backend() -> Any:
    from abistamp.core.errors import AbistampError

    for module in ("setuptools", "packaging"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise AbistampError(
                f"the build environment `{sys.prefix}` lacks `{module}`",
                "install setuptools>=64 and packaging>=22 into it, or setuptools>=71 alone, "
                "which carries a copy of packaging") from None
    import abistamp.backend

    return abistamp.backend


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: IO[str] | None = None, line: str | None = None) -> None:
    """Python's own display of a warning: on stderr, which is the build's log."""
    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


def _unmet(requirements: list[str]) -> list[str]:
    """The requirements this environment does not meet; torch is the variant's own and
    abistamp is on `sys.path`, so neither is ever asked for."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    missing = []
    for text in requirements:
        req = Requirement(text)
        if canonicalize_name(req.name) in ("torch", "abistamp"):
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            if req.specifier.contains(metadata.version(req.name), prereleases=True):
                continue
        except metadata.PackageNotFoundError:
            pass
        missing.append(text)
    return missing


def _report(answer: dict[str, Any]) -> None:
    with open(os.environ[REPORT], "w", encoding="utf-8") as f:
        json.dump(answer, f)
