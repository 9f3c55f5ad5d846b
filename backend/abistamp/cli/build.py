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

This module is the command: its options, the plan made from them, and the report (a table of
outcomes). The run over the variants is engine.py's, one variant's build variant_build.py's,
what that build is given buildinputs.py's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from abistamp.core.errors import AbistampError

from .common import (
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_OK,
    parse_config,
    parse_pairs,
    table,
)
from .engine import Matrix
from .progress import Progress
from .sources import resolve_source
from .variants import Outcome, Plan, Variant, recorded_environ
from .wheelhouse import Wheelhouse

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
        from .manylinux import check_policy

        check_policy(args.repair, os.uname().machine, "--repair")
    config = parse_config(args.config_setting)
    explicit_env = parse_pairs(args.env, "--env")
    # Unknown settings fail here, once, rather than in every variant's build.
    Settings.load(None, config, {**os.environ, **explicit_env})
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
