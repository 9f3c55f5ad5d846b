"""One variant, built in its work folder: the environment made by uv (or the one given with
`--python`), the backend's hooks run there (through pyproject_hooks, runner.py), the wheel
repaired if asked, then published into the wheelhouse with its manifest entry. The run around
it (which variants, in parallel, locked, logged) is engine.py's; what the build is given is
buildinputs.py's."""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from abistamp import __version__
from abistamp.core.cuda import requirement_cuda

from .buildinputs import effective_config, hook_environ, prepare_source, project_backend
from .runner import HookFailed, Hooks, Processes
from .sources import Source
from .variants import BuildFailed, Plan, Variant, last_line

BACKEND_REQUIRES = ["setuptools>=64", "packaging>=22"]
T = TypeVar("T")


@dataclasses.dataclass
class VariantBuild:
    """The steps of one variant's build; each says what it does and logs to the variant's log."""

    plan: Plan
    variant: Variant
    key: tuple[str, dict[str, Any]]  # the variant's key, and what went into it
    work: Path
    log: IO[str]
    say: Callable[[str], None]
    procs: Processes
    uv: str
    max_jobs: str

    def run(self, source: Source, start: float) -> tuple[dict[str, Any], str]:
        """Build, repair and publish; the wheelhouse entry and what publishing did."""
        variant, plan = self.variant, self.plan
        project = prepare_source(plan, source, self.work)
        requires, backend_env, backend_path = project_backend(project)
        env = hook_environ(plan, variant, self.work, backend_env, self.max_jobs)
        unkeyed = self._unkeyed(project)
        python = variant.python if variant.existing else self._make_env(requires)
        config = effective_config(plan, variant, project)
        out = self.work / "out"
        # Each hook in a fresh process, as PEP 517 asks: setup.py and what it imports keep
        # state in modules (DeepSpeed caches its accelerator), which must not leak from the
        # requirements query into the build.
        hooks = Hooks(self.procs, python, project, backend_path=backend_path, env=env,
                      log=self.log, scratch=self.work)
        self.say("asking the backend for build requirements")
        requires, unmet = _hook(self.log, hooks.requires, config)
        self._install_requested(requires, unmet, python)
        self.say(f"building the wheel (log: {self.log.name})")
        wheel = out / _hook(self.log, hooks.build_wheel, out, config)
        entry = self._entry(source, _abi_record(wheel), config, unkeyed, start)
        if plan.repair is not None:
            wheel = self._repair(wheel, python, env)
            entry["repair"] = _abi_record(wheel).get("repair")
        self.say("publishing into the wheelhouse")
        return plan.wheelhouse.publish(wheel, entry, replace=plan.rebuild,
                                       scratch=self.work / "restamp")

    def _install_requested(self, requires: list[str], unmet: list[str], python: Path) -> None:
        """What the backend asked for (`requires`) and the environment lacks (`unmet`):
        installed into a fresh one, logged for one given with `--python`."""
        # Whatever the environment meets: torch 2.14's own `cuda-toolkit[cublas,...]` satisfies
        # the name and version but brings no nvcc; the backend asks only when it has found none.
        toolkits = [r for r in requires if requirement_cuda(r)]
        for req in toolkits:
            self._kept_toolkit(req, python)
        missing = [r for r in unmet if r not in toolkits]
        if missing and not self.variant.existing:
            self.say(f"installing what the backend asked for: {' '.join(missing)}")
            self._uv_install(python, missing)
        elif missing:
            self.log.write(f"abistamp: not installed in the given environment: {missing}\n")

    def _entry(self, source: Source, record: dict[str, Any], config: dict[str, Any],
               unkeyed: dict[str, str], start: float) -> dict[str, Any]:
        """The wheelhouse manifest's entry for this build (docs/cli.md, the manifest)."""
        variant, plan = self.variant, self.plan
        return {
            "key": self.key[0],
            "source": source.describe(),
            "torch": {
                "requirement": variant.torch,
                "environment": str(variant.python) if variant.existing else None,
                "version": record.get("torch"),
                "accelerator": record.get("accelerator"),
                "cuda": record.get("cuda"),
                **(plan.torch_from() if not variant.existing else {}),
            },
            "python": self.key[1]["python"],
            "config_settings": config,
            "environment": plan.environ,
            **({"unkeyed_environment": unkeyed} if unkeyed else {}),
            "built_at": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - start, 1),
            "abistamp": __version__,
        }

    def _unkeyed(self, project: Path) -> dict[str, str]:
        """Shell variables this build may read that the variant's key does not hold
        (shellenv.py): said, logged, and recorded in the wheelhouse entry."""
        from .shellenv import unkeyed_environ

        found = unkeyed_environ(project, os.environ, self.plan.environ)
        if found:
            shown = " ".join(f"{k}={v}" for k, v in found.items())
            text = (f"the shell sets {shown}, which this build may read but the variant's key "
                    "does not hold (a later run would skip this variant whatever it is set to); "
                    "pass build switches as `--env NAME=VALUE`")
            self.log.write(f"abistamp: {text}\n")
            self.say(text)
        return found

    # --- uv ---------------------------------------------------------------------------------

    def _make_env(self, requires: list[str]) -> Path:
        assert self.variant.torch is not None
        venv = self.work / "venv"
        self.say("creating the build environment")
        if self.procs.run([self.uv, "venv", "-q", "-p", str(self.variant.python), str(venv)],
                          log=self.log, env=_uv_environ()) != 0:
            raise BuildFailed(f"`uv venv` failed; {last_line(self.log)}")
        python = venv / "bin" / "python"
        reqs = [self.variant.torch, *requires,
                *[r for r in BACKEND_REQUIRES if r not in requires]]
        self.say(f"installing {' '.join(reqs)}")
        self._uv_install(python, reqs)
        return python

    def _uv_install(self, python: Path, reqs: list[str], target: Path | None = None) -> None:
        """`uv pip install` into the environment, or with `target` into that folder."""
        into = ["--target", str(target)] if target else []
        cmd = [self.uv, "pip", "install", "-p", str(python), *into, *self.plan.index_args(),
               *reqs]
        if self.procs.run(cmd, log=self.log, env=_uv_environ()) != 0:
            what = (f"installing NVIDIA's toolkit wheels `{reqs[0]}`" if target
                    else "`uv pip install`")
            raise BuildFailed(f"{what} failed: {last_line(self.log)}")

    def _kept_toolkit(self, req: str, python: Path) -> None:
        """NVIDIA's CUDA toolkit wheels go into the folder abistamp keeps per CUDA version
        (`uv pip install --target`), never into the build environment: the user's own with
        `--python`, and a fresh one would download 271 MB again each time."""
        from abistamp.core.cuda import fill_kept

        cuda = requirement_cuda(req)
        assert cuda is not None

        def install(target: Path, requirement: str) -> None:
            self._uv_install(python, [requirement], target)

        folder = fill_kept(cuda, os.environ, install, lambda folder: self.say(
            f"installing NVIDIA's CUDA toolkit wheels {req} into {folder}"))
        self.log.write(f"abistamp: CUDA {cuda} toolkit from NVIDIA's wheels: {folder}\n")

    # --- after the build --------------------------------------------------------------------

    def _repair(self, wheel: Path, python: Path, env: dict[str, str]) -> Path:
        """auditwheel repair, before the wheel enters the wheelhouse (see repair.py); the build
        environment tells torch's libraries apart."""
        from .repair import repair_wheel
        from .torchlibs import torch_libraries

        assert self.plan.repair is not None
        self.say(f"repairing the wheel (auditwheel, {self.plan.repair})")
        libs = torch_libraries(python, _abi_record(wheel), explicit=True)
        notes: list[str] = []
        repaired = repair_wheel(wheel, self.work / "repaired", self.plan.repair, libs,
                                notes.append, source_date_epoch=env.get("SOURCE_DATE_EPOCH"))
        self.say(f"repaired: {repaired.policy}; left to torch: "
                 f"{', '.join(sorted(repaired.left_to_torch)) or 'none'}; grafted: "
                 f"{', '.join(repaired.grafted) or 'none'}")
        return repaired.path


def _hook(log: IO[str], call: Callable[..., T], *args: Any) -> T:
    """A hook called through `Hooks`; its failure as one line: the backend's own message, else
    the log's most telling line."""
    try:
        return call(*args)
    except HookFailed as e:
        raise BuildFailed(e.error or f"the build failed: {last_line(log)}") from None


def _abi_record(wheel: Path) -> dict[str, Any]:
    from abistamp.core.stamp import read_wheel

    record = read_wheel(wheel).abi_record
    if not record:
        raise BuildFailed(f"`{wheel.name}` has no abistamp record")
    return record


def _uv_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
