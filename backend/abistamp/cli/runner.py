"""How `abistamp build` runs things: every child process of every variant in its own process
group (so that an interrupt ends them all, compilers included), and the PEP 517 hooks of
abistamp's backend called in a build environment through pyproject_hooks."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from abistamp.core.errors import AbistampError

from . import hook_backend
from .variants import Cancelled


class Processes:
    """Child processes of all variants, so that an interrupt can end every one of them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen[bytes]] = set()
        self.cancelled = threading.Event()

    def run(self, cmd: list[str], *, log: IO[str], cwd: Path | None = None,
            env: dict[str, str] | None = None) -> int:
        if self.cancelled.is_set():
            raise Cancelled
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        # A session of its own: the compiler and its children go when we end the group.
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        with self.lock:
            self.running.add(proc)
        try:
            rc = proc.wait()
        finally:
            with self.lock:
                self.running.discard(proc)
        if self.cancelled.is_set():
            raise Cancelled
        return rc

    def cancel(self) -> None:
        self.cancelled.set()
        with self.lock:
            procs = list(self.running)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
            deadline = time.monotonic() + 5
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.05)


class HookFailed(Exception):
    """A hook's process failed. `error` is the backend's own message on one line, when it gave
    one; otherwise the log tells."""

    def __init__(self, error: str | None) -> None:
        super().__init__(error or "the hook failed")
        self.error = error


class Hooks:
    """abistamp's backend in one build environment, called as pip and `python -m build` call a
    backend (pyproject_hooks): each hook in a fresh process of the environment's python, in the
    project folder, started by :class:`Processes` with its output in the log.

    The backend imported there is :mod:`.hook_backend`, from the private copy of this package
    that `PYTHONPATH` names first, then the project's `backend-path` folders (for the backend
    abistamp wraps) and the project itself, where a setup.py finds its own modules. It is not
    given to pyproject_hooks as `backend_path`: that must be relative and inside the source
    tree, and would be the only place the backend is looked for.
    """

    def __init__(self, procs: Processes, python: Path, project: Path, *,
                 backend_path: list[str], env: Mapping[str, str], log: IO[str],
                 scratch: Path) -> None:
        from pyproject_hooks import BuildBackendHookCaller

        from .envs import private_copy

        path = [str(private_copy()), *backend_path, str(project)]
        if env.get("PYTHONPATH"):  # given with `--env`
            path.append(env["PYTHONPATH"])
        self._report = scratch / "hook-report.json"
        self._env = {**env, "PYTHONPATH": os.pathsep.join(path),
                     hook_backend.REPORT: str(self._report),
                     hook_backend.PARENT: str(os.getpid())}
        self._procs = procs
        self._log = log
        self._caller = BuildBackendHookCaller(str(project), hook_backend.__name__,
                                              runner=self._run, python_executable=str(python))

    def requires(self, config: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """`get_requires_for_build_wheel`: the requirements, and those the environment does
        not meet (torch and abistamp aside)."""
        requires = list(self._call(self._caller.get_requires_for_build_wheel, config))
        unmet = self._read_report().get("unmet")
        if not isinstance(unmet, list):
            raise HookFailed(None)
        return requires, unmet

    def build_wheel(self, out: Path, config: Mapping[str, Any]) -> str:
        """`build_wheel` into `out`: the wheel's file name."""
        return str(self._call(self._caller.build_wheel, str(out), config))

    def _call(self, hook: Callable[..., Any], *args: Any) -> Any:
        from pyproject_hooks import BackendUnavailable

        self._report.unlink(missing_ok=True)
        try:
            return hook(*args)
        except BackendUnavailable as e:
            # The process could not import the backend and exited normally: only the exception
            # tells why (its message ends with the traceback).
            self._log.write(f"{e}\n")
            self._log.flush()
            raise HookFailed(None) from None

    def _run(self, cmd: Sequence[str], cwd: str | None = None,
             extra_environ: Mapping[str, str] | None = None) -> None:
        """pyproject_hooks' subprocess runner: the hook's process, its output into the log."""
        env = {**self._env, **(extra_environ or {})}
        if self._procs.run(list(cmd), log=self._log, cwd=Path(cwd) if cwd else None,
                           env=env) != 0:
            raise HookFailed(self._read_report().get("error"))

    def _read_report(self) -> dict[str, Any]:
        try:
            answer = json.loads(self._report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return answer if isinstance(answer, dict) else {}


def find_uv() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found:
        return found
    raise AbistampError("`uv` was not found (abistamp build makes its environments with it)",
                        "pip install 'abistamp[cli]', or put uv on PATH")
