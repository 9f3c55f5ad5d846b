"""`abistamp build`: one source, several torch variants, each built in its own environment.

For every variant (a torch requirement, or an existing environment given with `--python`):

1. its key: a digest of the source's content, the torch requirement and where torch comes
   from, the Python version, the config settings and the build environment variables that
   change a build. A key already in the wheelhouse manifest is skipped: a file digest and a
   JSON read, no environment, no compiler.
2. a fresh virtual environment made by uv, with that torch, the project's build requirements,
   setuptools and packaging (abistamp itself is not installed: a private copy of this package
   goes on the build's `sys.path`, as an in-tree `backend-path` would);
3. a private copy of the source (a build folder left by one torch must not feed the next);
4. the PEP 517 hooks `get_requires_for_build_wheel` and `build_wheel` of `abistamp.backend`,
   run by the environment's python in the copy (through pyproject_hooks, runner.py). abistamp
   is the backend whatever the project declares: a project's own backend is wrapped through
   `ABISTAMP_BACKEND`;
5. the wheel published into the wheelhouse (see wheelhouse.py).

Each variant's work folder is keyed and locked, so two runs that want the same variant build it
once; subprocesses run in their own process group and die with the run on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import IO, Any, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from abistamp import __version__
from abistamp.core.atomic import file_lock
from abistamp.core.cuda import requirement_cuda
from abistamp.core.errors import AbistampError
from abistamp.core.process import cpu_count

from .common import (
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_OK,
    parse_config,
    parse_pairs,
    table,
)
from .progress import Progress
from .runner import HookFailed, Hooks, Processes, find_uv
from .sources import Source, copy_tree, resolve_source, unpack_sdist
from .variants import (
    BuildFailed,
    Cancelled,
    Outcome,
    Plan,
    Say,
    Variant,
    recorded_environ,
    variant_key,
)
from .wheelhouse import Wheelhouse

DEFAULT_SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip member can have
PEP518_DEFAULT_REQUIRES = ["setuptools>=40.8.0", "wheel"]
BACKEND_REQUIRES = ["setuptools>=64", "packaging>=22"]
T = TypeVar("T")


# --- running ------------------------------------------------------------------------------------


class Matrix:
    def __init__(self, plan: Plan, say: Say, progress: Progress | None = None) -> None:
        self.plan = plan
        self.say = say
        self.progress = progress
        self.procs = Processes()
        self.keys: dict[Variant, tuple[str, dict[str, Any]]] = {}
        self._fetch_lock = threading.Lock()
        self._uv: str | None = None
        self.interrupted = False
        self.max_jobs = "1"

    def run(self) -> list[Outcome]:
        plan = self.plan
        outcomes: dict[Variant, Outcome] = {}
        todo: list[Variant] = []
        manifest = plan.wheelhouse.load()
        for variant in plan.variants:
            self.keys[variant] = variant_key(plan, variant)
            hit = None if plan.rebuild else plan.wheelhouse.lookup(self.keys[variant][0],
                                                                   manifest)
            if hit is not None:
                outcomes[variant] = Outcome(variant, "skipped", "already in the wheelhouse", hit)
                self.say(variant, f"skipped: already in the wheelhouse ({hit['wheel']})")
            else:
                todo.append(variant)
        if todo:
            self._uv = find_uv()
            outcomes.update(self._build_all(todo))
        return [outcomes[v] for v in plan.variants]

    def _build_all(self, todo: list[Variant]) -> dict[Variant, Outcome]:
        results: dict[Variant, Outcome] = {}
        jobs = max(1, min(self.plan.jobs, len(todo)))
        self.max_jobs = str(max(1, cpu_count() // jobs))
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="abistamp-build")
        futures = {pool.submit(self._build_one, v): v for v in todo}
        restore = _sigterm_as_interrupt()
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
        except KeyboardInterrupt:
            self.interrupted = True
            self.say(None, "interrupted: stopping every build")
            for future in futures:
                future.cancel()
            self.procs.cancel()
            for future, variant in futures.items():
                try:
                    results[variant] = future.result()
                except BaseException:  # noqa: BLE001 - cancelled or failed on the way out
                    results[variant] = Outcome(variant, "cancelled", "interrupted")
        finally:
            restore()
            pool.shutdown(wait=True, cancel_futures=True)
        return results

    # --- one variant ------------------------------------------------------------------------

    def _build_one(self, variant: Variant) -> Outcome:
        plan = self.plan
        key, _ = self.keys[variant]
        short = key[:16]
        start = time.monotonic()
        plan.work_root.mkdir(parents=True, exist_ok=True)
        logs = plan.work_root / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{short}.log"
        work = plan.work_root / short
        try:
            with file_lock(plan.work_root / f"{short}.lock",
                           lambda: self.say(variant, "waiting: another run is building this "
                                                     "variant")):
                hit = None if plan.rebuild else plan.wheelhouse.lookup(key)
                if hit is not None:
                    self.say(variant, f"skipped: another run built it ({hit['wheel']})")
                    return Outcome(variant, "skipped", "built by another run meanwhile", hit,
                                   time.monotonic() - start)
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                try:
                    with open(log_path, "w", encoding="utf-8") as log:
                        if self.progress:
                            self.progress.start(variant.name, log_path)
                        entry, note = self._build_in(variant, key, work, log, start)
                finally:
                    if self.progress:
                        self.progress.finish(variant.name)
                    shutil.rmtree(work, ignore_errors=True)
        except Cancelled:
            return Outcome(variant, "cancelled", "interrupted", None,
                           time.monotonic() - start, log_path)
        except (BuildFailed, AbistampError) as e:
            text = e.one_line() if isinstance(e, AbistampError) else str(e)
            self.say(variant, f"FAILED: {text} (log: {log_path})")
            return Outcome(variant, "failed", text, None, time.monotonic() - start, log_path)
        except Exception as e:  # noqa: BLE001 - one variant's bug must not lose the others
            text = f"{type(e).__name__}: {e}"
            self.say(variant, f"FAILED: {text} (log: {log_path})")
            return Outcome(variant, "failed", text, None, time.monotonic() - start, log_path)
        seconds = time.monotonic() - start
        self.say(variant, f"built {entry['wheel']} in {seconds:.1f} s"
                 + ("" if note == "added" else f" ({note})"))
        return Outcome(variant, "built", note, entry, seconds, log_path)

    def _build_in(self, variant: Variant, key: str, work: Path, log: IO[str],
                  start: float) -> tuple[dict[str, Any], str]:
        plan = self.plan
        source = self._fetched_source(variant, log)
        project = self._prepare_source(source, work)
        requires, backend_env, backend_path = project_backend(project)
        env = self._environ(variant, work, backend_env)
        unkeyed = self._unkeyed(variant, project, log)
        if variant.existing:
            python = variant.python
        else:
            python = self._make_env(variant, work, requires, log)
        config = self._effective_config(variant, project)
        out = work / "out"
        # Each hook in a fresh process, as PEP 517 asks: setup.py and what it imports keep
        # state in modules (DeepSpeed caches its accelerator), which must not leak from the
        # requirements query into the build.
        hooks = Hooks(self.procs, python, project, backend_path=backend_path, env=env, log=log,
                      scratch=work)
        self.say(variant, "asking the backend for build requirements")
        requires, unmet = _hook(log, hooks.requires, config)
        # Whatever the environment meets: torch 2.14's own `cuda-toolkit[cublas,...]` satisfies
        # the name and version but brings no nvcc; the backend asks only when it has found none.
        toolkits = [r for r in requires if requirement_cuda(r)]
        for req in toolkits:
            self._kept_toolkit(variant, req, python, log)
        missing = [r for r in unmet if r not in toolkits]
        if missing and not variant.existing:
            self.say(variant, f"installing what the backend asked for: {' '.join(missing)}")
            self._uv_install(python, missing, log)
        elif missing:
            log.write(f"abistamp: not installed in the given environment: {missing}\n")
        self.say(variant, f"building the wheel (log: {log.name})")
        name = _hook(log, hooks.build_wheel, out, config)
        wheel = out / str(name)
        record = _abi_record(wheel)
        entry: dict[str, Any] = {
            "key": key,
            "source": source.describe(),
            "torch": {
                "requirement": variant.torch,
                "environment": str(variant.python) if variant.existing else None,
                "version": record.get("torch"),
                "accelerator": record.get("accelerator"),
                "cuda": record.get("cuda"),
                **(plan.torch_from() if not variant.existing else {}),
            },
            "python": self.keys[variant][1]["python"],
            "config_settings": config,
            "environment": plan.environ,
            **({"unkeyed_environment": unkeyed} if unkeyed else {}),
            "built_at": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - start, 1),
            "abistamp": __version__,
        }
        if plan.repair is not None:
            wheel = self._repair(variant, wheel, python, env, work)
            entry["repair"] = _abi_record(wheel).get("repair")
        self.say(variant, "publishing into the wheelhouse")
        return plan.wheelhouse.publish(wheel, entry, replace=plan.rebuild,
                                       scratch=work / "restamp")

    def _kept_toolkit(self, variant: Variant, req: str, python: Path, log: IO[str]) -> None:
        """NVIDIA's CUDA toolkit wheels go into the folder abistamp keeps per CUDA version
        (`uv pip install --target`), never into the build environment: the user's own with
        `--python`, and a fresh one would download 271 MB again each time."""
        from abistamp.core.cuda import fill_kept

        cuda = requirement_cuda(req)
        assert cuda is not None and self._uv is not None
        uv = self._uv

        def install(target: Path, requirement: str) -> None:
            cmd = [uv, "pip", "install", "-p", str(python), "--target", str(target),
                   *self.plan.index_args(), requirement]
            if self.procs.run(cmd, log=log, env=_uv_environ()) != 0:
                raise BuildFailed(f"installing NVIDIA's toolkit wheels `{requirement}` failed: "
                                  f"{_last_line(log)}")

        folder = fill_kept(cuda, os.environ, install, lambda folder: self.say(
            variant, f"installing NVIDIA's CUDA toolkit wheels {req} into {folder}"))
        log.write(f"abistamp: CUDA {cuda} toolkit from NVIDIA's wheels: {folder}\n")

    def _repair(self, variant: Variant, wheel: Path, python: Path, env: dict[str, str],
                work: Path) -> Path:
        """auditwheel repair, before the wheel enters the wheelhouse (see repair.py); the build
        environment tells torch's libraries apart."""
        from .repair import repair_wheel, torch_libraries

        assert self.plan.repair is not None
        self.say(variant, f"repairing the wheel (auditwheel, {self.plan.repair})")
        libs = torch_libraries(python, _abi_record(wheel), explicit=True)
        notes: list[str] = []
        repaired = repair_wheel(wheel, work / "repaired", self.plan.repair, libs, notes.append,
                                source_date_epoch=env.get("SOURCE_DATE_EPOCH"))
        self.say(variant, f"repaired: {repaired.policy}; left to torch: "
                 f"{', '.join(sorted(repaired.left_to_torch)) or 'none'}; grafted: "
                 f"{', '.join(repaired.grafted) or 'none'}")
        return repaired.path

    def _fetched_source(self, variant: Variant, log: IO[str]) -> Source:
        """A requirement's sdist, fetched once per run (the first variant does it; the others
        wait) through the simple repository API: none of the project's code runs (fetch.py)."""
        from .fetch import default_cache_dir, fetch_config, fetch_sdist

        plan = self.plan
        if plan.source.kind != "requirement" or plan.source.path is not None:
            if plan.source.url:
                log.write(f"abistamp: {plan.source.spec} from {plan.source.url} "
                          f"({plan.source.digest}; {plan.source.checked})\n")
            return plan.source
        with self._fetch_lock:
            if plan.source.path is None:
                self.say(variant, f"fetching the sdist of {plan.source.spec}")

                def note(text: str) -> None:
                    log.write(f"abistamp: {text}\n")
                    log.flush()
                    if text.startswith("WARNING"):
                        self.say(variant, text)

                config = fetch_config(plan.index_url, plan.extra_index_urls, plan.find_links)
                got = fetch_sdist(plan.source.spec, config,
                                  plan.cache_dir or default_cache_dir(), note)
                plan.source = dataclasses.replace(plan.source, path=got.path,
                                                  digest="sha256:" + got.sha256, url=got.url,
                                                  checked=got.checked)
        return plan.source

    def _unkeyed(self, variant: Variant, project: Path, log: IO[str]) -> dict[str, str]:
        """Shell variables this build may read that the variant's key does not hold
        (shellenv.py): said, logged, and recorded in the wheelhouse entry."""
        from .shellenv import unkeyed_environ

        found = unkeyed_environ(project, os.environ, self.plan.environ)
        if found:
            shown = " ".join(f"{k}={v}" for k, v in found.items())
            text = (f"the shell sets {shown}, which this build may read but the variant's key "
                    "does not hold (a later run would skip this variant whatever it is set to); "
                    "pass build switches as `--env NAME=VALUE`")
            log.write(f"abistamp: {text}\n")
            self.say(variant, text)
        return found

    def _prepare_source(self, source: Source, work: Path) -> Path:
        assert source.path is not None
        if source.kind == "tree":
            dest = work / "src"
            copy_tree(source.path, dest, [self.plan.wheelhouse.root, self.plan.work_root])
            return dest
        return unpack_sdist(source.path, work / "src")

    def _environ(self, variant: Variant, work: Path, backend_env: dict[str, str]
                 ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
        env.update(self.plan.environ)
        bindir = variant.python.parent if variant.existing else work / "venv" / "bin"
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
        if (bindir.parent / "pyvenv.cfg").is_file() or not variant.existing:
            env["VIRTUAL_ENV"] = str(bindir.parent)
        if not variant.existing:
            # The environment is ours and short-lived: let the first hook's imports (torch:
            # seconds) leave bytecode for the second, whatever the user's shell says.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.setdefault("MAX_JOBS", self.max_jobs)
        # Same source, same ABI, same work folder: same bytes. A rebuild then keeps its
        # filename instead of taking the next build number for a mere timestamp.
        env.setdefault("SOURCE_DATE_EPOCH", DEFAULT_SOURCE_DATE_EPOCH)
        for k, v in backend_env.items():
            env.setdefault(k, v)
        return env

    def _effective_config(self, variant: Variant, project: Path) -> dict[str, str | list[str]]:
        from abistamp.core.settings import FIELDS_BY_KEY, read_tool_table

        config = dict(self.plan.config)
        if variant.torch and "abistamp.torch" not in config:
            config["abistamp.torch"] = variant.torch  # the backend checks the torch it finds
        # Wheelhouse wheels are installed prebuilt, where a local label breaks no frontend's
        # contract and keeps each ABI's version apart: add it unless someone chose otherwise.
        table, _ = read_tool_table(project)
        if ("abistamp.local-version" not in config and "local-version" not in table
                and FIELDS_BY_KEY["local-version"].env not in os.environ):
            config["abistamp.local-version"] = "always"
        return config

    def _make_env(self, variant: Variant, work: Path, requires: list[str], log: IO[str]
                  ) -> Path:
        assert self._uv is not None and variant.torch is not None
        venv = work / "venv"
        self.say(variant, "creating the build environment")
        env = _uv_environ()
        if self.procs.run([self._uv, "venv", "-q", "-p", str(variant.python), str(venv)],
                          log=log, env=env) != 0:
            raise BuildFailed(f"`uv venv` failed; {_last_line(log)}")
        python = venv / "bin" / "python"
        reqs = [variant.torch, *requires, *[r for r in BACKEND_REQUIRES if r not in requires]]
        self.say(variant, f"installing {' '.join(reqs)}")
        self._uv_install(python, reqs, log)
        return python

    def _uv_install(self, python: Path, reqs: list[str], log: IO[str]) -> None:
        assert self._uv is not None
        cmd = [self._uv, "pip", "install", "-p", str(python), *self.plan.index_args(), *reqs]
        if self.procs.run(cmd, log=log, env=_uv_environ()) != 0:
            raise BuildFailed(f"`uv pip install` failed: {_last_line(log)}")


def project_backend(project: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """A project's build requirements (less abistamp), the backend to wrap, its backend-path."""
    from abistamp.core.settings import read_pyproject

    pyproject = project / "pyproject.toml"
    data = read_pyproject(pyproject) if pyproject.is_file() else {}
    system = data.get("build-system")
    if not isinstance(system, dict):
        return list(PEP518_DEFAULT_REQUIRES), {}, []
    requires = [r for r in system.get("requires", PEP518_DEFAULT_REQUIRES)
                if _req_name(r) != "abistamp"]
    backend = system.get("build-backend")
    env = {}
    if isinstance(backend, str) and backend.split(":")[0].split(".")[0] != "abistamp":
        env["ABISTAMP_BACKEND"] = backend
    paths = [str((project / p).resolve()) for p in system.get("backend-path", [])]
    return requires, env, paths


def _req_name(text: str) -> str:
    try:
        return str(canonicalize_name(Requirement(text).name))
    except InvalidRequirement:
        return text


def _abi_record(wheel: Path) -> dict[str, Any]:
    from abistamp.core.stamp import read_wheel

    record = read_wheel(wheel).abi_record
    if not record:
        raise BuildFailed(f"`{wheel.name}` has no abistamp record")
    return record


def _hook(log: IO[str], call: Callable[..., T], *args: Any) -> T:
    """A hook called through `Hooks`; its failure as one line: the backend's own message, else
    the log's most telling line."""
    try:
        return call(*args)
    except HookFailed as e:
        raise BuildFailed(e.error or f"the build failed: {_last_line(log)}") from None


def _uv_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}


def _last_line(log: IO[str]) -> str:
    """The most telling line of a log, for a one-line summary: the first compiler error, else
    the last `error:` line with its `cause:`/`hint:` continuation (uv), else the last line."""
    log.flush()
    try:
        with open(log.name, encoding="utf-8", errors="replace") as f:
            lines = [ln.rstrip() for ln in f.read()[-20000:].splitlines() if ln.strip()]
    except OSError:
        return "see the log"
    for line in lines:
        if _COMPILER_ERROR.search(line):
            return line.strip()[:400]
    for i in range(len(lines) - 1, -1, -1):
        text = lines[i].strip()
        if text.lower().startswith(("error", "abistamp: error")):
            more = [ln.strip() for ln in lines[i + 1:i + 4] if ln.startswith((" ", "\t"))]
            return " ".join([text, *more])[:400]
    return lines[-1].strip()[:400] if lines else "no output"


_COMPILER_ERROR = re.compile(r":\d+:(\d+:)? (fatal )?error:")


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Let SIGTERM stop the builds the way Ctrl-C does (only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, old)

    return restore


# --- the command ----------------------------------------------------------------------------------

DESCRIPTION = ("Build SOURCE once per torch variant, each in a fresh environment made by "
    "uv, stamped by the abistamp backend (even when the project does not declare it), into "
    "WHEELHOUSE/<abi-label>/. Variants already in the wheelhouse are skipped.")
EPILOG = ("examples:\n"
    "  abistamp build . --torch torch==2.13.0 --torch torch==2.14.1\n"
    "  abistamp build dist/foo-1.0.tar.gz --torch 'torch==2.5.*' "
    "--index-url https://download.pytorch.org/whl/cu124\n"
    "  abistamp build deepspeed==0.19.8 --torch torch==2.13.0 --env DS_BUILD_CPU_ADAM=1\n"
    "  abistamp build . --python /opt/envs/torch26/bin/python   # that env's own torch\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE",
                   help="a source tree, an sdist file, or `name==version` (its sdist fetched from the "
                   "indexes pip and uv are configured with; no project code runs)")
    p.add_argument("--torch", action="append", default=[], metavar="SPEC",
                   help="a torch requirement to build against (repeatable): one variant each")
    p.add_argument("--python", action="append", default=[], metavar="PATH",
                   help="build in this existing environment with its own torch (repeatable); "
                   "nothing is installed into it")
    p.add_argument("-o", "--wheelhouse", "--out-dir", default="wheelhouse", metavar="WHEELHOUSE",
                   help="the wheelhouse folder (default: ./wheelhouse)")
    p.add_argument("--index-url", metavar="URL", help="where to get torch (as with pip and uv)")
    p.add_argument("--extra-index-url", action="append", default=[], metavar="URL")
    p.add_argument("--find-links", "-f", action="append", default=[], metavar="PATH_OR_URL")
    p.add_argument("--base-python", metavar="PATH",
                   help="the interpreter new build environments are made from "
                   "(default: the one running abistamp)")
    p.add_argument("-C", "--config-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="a PEP 517 config setting for every variant, e.g. "
                   "-C abistamp.label=cu{cuda}torch{major}.{minor}")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the builds, recorded and part of the "
                   "variant's key (e.g. DS_BUILD_CPU_ADAM=1, FORCE_CUDA=1): the way to pass "
                   "build switches")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where fetched sdists are kept between runs (default: "
                   "$XDG_CACHE_HOME/abistamp/sdists, else ~/.cache/abistamp/sdists)")
    p.add_argument("--rebuild", action="store_true",
                   help="build again even when the variant is in the wheelhouse")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="variants built at once (default 1); MAX_JOBS is divided among them")
    p.add_argument("--work-dir", metavar="DIR",
                   help="where build environments, source copies and logs go (default: "
                   "$TMPDIR/abistamp-$UID)")
    p.add_argument("--repair", nargs="?", const="auto", metavar="PLAT",
                   help="repair each new wheel with auditwheel before it enters the wheelhouse "
                   "(manylinux tag; torch's libraries left to torch); PLAT: a policy such as "
                   "manylinux_2_28_x86_64, default auto (write --repair=PLAT)")


def run(args: argparse.Namespace) -> int:
    from abistamp.core.labels import parse_torch_requirement
    from abistamp.core.settings import Settings

    from .envs import resolve_python

    if not args.torch and not args.python:
        raise AbistampError("no variant to build",
                            "name at least one `--torch SPEC` or `--python PATH`")
    if args.jobs < 1:
        raise AbistampError(f"`--jobs {args.jobs}` must be at least 1", "pass `--jobs 2`")
    for spec in args.torch:
        parse_torch_requirement(spec, f"`--torch {spec}`")
    if args.repair is not None:
        from .repair import check_policy

        check_policy(args.repair, os.uname().machine, "--repair")
    config = parse_config(args.config_setting)
    explicit_env = parse_pairs(args.env, "--env")
    # Unknown settings fail here, once, rather than in every variant's build.
    Settings.load(Path("/nonexistent-abistamp-project"), config, {**os.environ, **explicit_env})
    wheelhouse = Wheelhouse(Path(args.wheelhouse))
    work_root = Path(args.work_dir).absolute() if args.work_dir else None
    skip = [wheelhouse.root] + ([work_root] if work_root else [])
    source = resolve_source(args.source, skip)
    base = resolve_python(args.base_python) if args.base_python else Path(sys.executable)
    variants = [Variant(spec, base) for spec in args.torch]
    variants += [Variant(None, resolve_python(p)) for p in args.python]
    find_links = [str(Path(f).absolute()) if "://" not in f and Path(f).exists() else f
                  for f in args.find_links]
    plan = Plan(source=source, wheelhouse=wheelhouse, variants=variants,
                index_url=args.index_url, extra_index_urls=list(args.extra_index_url),
                find_links=find_links, config=config, environ=recorded_environ(explicit_env),
                rebuild=args.rebuild, jobs=args.jobs, repair=args.repair,
                cache_dir=Path(args.cache_dir).absolute() if args.cache_dir else None)
    if work_root:
        plan.work_root = work_root
    width = max(len(v.name) for v in variants)
    display = Progress(sys.stderr, width)

    def progress(variant: Variant | None, text: str) -> None:
        display.say(f"abistamp: [{variant.name.ljust(width)}] {text}" if variant
                    else f"abistamp: {text}")

    started = time.monotonic()
    matrix = Matrix(plan, progress, display)
    try:
        outcomes = matrix.run()
    finally:
        display.close()
    print(table(outcome_rows(outcomes)))
    failed = [o for o in outcomes if o.status in ("failed", "cancelled")]
    print(f"wheelhouse: {wheelhouse.root} ({len(outcomes) - len(failed)} of {len(outcomes)} "
          f"variants ready, {time.monotonic() - started:.1f} s)")
    for o in failed:
        if o.log:
            print(f"{o.variant.name}: {o.status}; log: {o.log}")
    if matrix.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_MISMATCH if failed else EXIT_OK


def outcome_rows(outcomes: list[Outcome]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("VARIANT", "STATUS", "ABI", "WHEEL", "TIME")]
    for o in outcomes:
        entry = o.entry or {}
        wheel = str(entry.get("wheel", "-"))
        rows.append((o.variant.name, o.status, str(entry.get("label", "-")),
                     wheel.split("/", 1)[-1] if o.status in ("built", "skipped") else
                     (o.note[:100] if o.note else "-"),
                     f"{o.seconds:.1f}s" if o.status != "skipped" else "-"))
    return rows
