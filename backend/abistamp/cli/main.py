"""The `abistamp` command line: build an ABI matrix into a wheelhouse, stamp, inspect, check,
configure uv. See docs/cli.md.

Exit codes: 0 success; 1 a mismatch (`check`) or a failed variant (`build`); 2 a usage or input
error (the message says which and how to fix it); 130 interrupted.

The build backend never imports this module, and this module imports each command's code only
when that command runs, so `abistamp check` starts in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from abistamp import __version__
from abistamp.core.errors import AbistampError

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = ("Build, stamp, inspect and check torch extension wheels by the torch ABI they "
               "were built for.")

EPILOG = """\
examples:
  abistamp build examples/tiny-ext --torch torch==2.13.0 --torch torch==2.14.1 -o wheelhouse
  abistamp build deepspeed==0.19.8 --torch torch==2.13.0 --env DS_BUILD_CPU_ADAM=1 -o wh
  abistamp stamp dist/foo-1.0-cp311-cp311-linux_x86_64.whl --python .venv -o stamped/
  abistamp inspect wheelhouse/pt213cpu/*.whl
  abistamp repair wheelhouse/pt213cpu/*.whl -o dist/
  abistamp check --python .venv/bin/python
  abistamp uv-config wheelhouse --extra cpu=pt213cpu --extra cu130=pt214cu130
  abistamp matrix --format github --github-output
  abistamp index artifacts/wheelhouse-* -o public

exit codes: 0 ok; 1 a mismatch (check) or a failed variant (build); 2 usage or input error;
130 interrupted. Documentation: docs/cli.md.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code is 2 too; one line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (fix: see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    def fmt(prog: str) -> argparse.HelpFormatter:
        return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30, width=100)

    parser = _Parser(prog="abistamp", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"abistamp {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands",
                                parser_class=_Parser)

    b = sub.add_parser(
        "build", formatter_class=fmt,
        help="build one source for several torch variants into a per-ABI wheelhouse",
        description="Build SOURCE once per torch variant, each in a fresh environment made by "
        "uv, stamped by the abistamp backend (even when the project does not declare it), into "
        "WHEELHOUSE/<abi-label>/. Variants already in the wheelhouse are skipped.",
        epilog="examples:\n"
        "  abistamp build . --torch torch==2.13.0 --torch torch==2.14.1\n"
        "  abistamp build dist/foo-1.0.tar.gz --torch 'torch==2.5.*' "
        "--index-url https://download.pytorch.org/whl/cu124\n"
        "  abistamp build deepspeed==0.19.8 --torch torch==2.13.0 --env DS_BUILD_CPU_ADAM=1\n"
        "  abistamp build . --python /opt/envs/torch26/bin/python   # that env's own torch\n")
    b.add_argument("source", metavar="SOURCE",
                   help="a source tree, an sdist file, or `name==version` (fetched with pip)")
    b.add_argument("--torch", action="append", default=[], metavar="SPEC",
                   help="a torch requirement to build against (repeatable): one variant each")
    b.add_argument("--python", action="append", default=[], metavar="PATH",
                   help="build in this existing environment with its own torch (repeatable); "
                   "nothing is installed into it")
    b.add_argument("-o", "--wheelhouse", "--out-dir", default="wheelhouse", metavar="WHEELHOUSE",
                   help="the wheelhouse folder (default: ./wheelhouse)")
    b.add_argument("--index-url", metavar="URL", help="where to get torch (as with pip and uv)")
    b.add_argument("--extra-index-url", action="append", default=[], metavar="URL")
    b.add_argument("--find-links", "-f", action="append", default=[], metavar="PATH_OR_URL")
    b.add_argument("--base-python", metavar="PATH",
                   help="the interpreter new build environments are made from "
                   "(default: the one running abistamp)")
    b.add_argument("-C", "--config-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="a PEP 517 config setting for every variant, e.g. "
                   "-C abistamp.label=cu{cuda}torch{major}.{minor}")
    b.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the builds, recorded and part of the "
                   "variant's key (e.g. DS_BUILD_CPU_ADAM=1)")
    b.add_argument("--rebuild", action="store_true",
                   help="build again even when the variant is in the wheelhouse")
    b.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="variants built at once (default 1); MAX_JOBS is divided among them")
    b.add_argument("--work-dir", metavar="DIR",
                   help="where build environments, source copies and logs go (default: "
                   "$TMPDIR/abistamp-$UID)")
    b.add_argument("--repair", nargs="?", const="auto", metavar="PLAT",
                   help="repair each new wheel with auditwheel before it enters the wheelhouse "
                   "(manylinux tag; torch's libraries left to torch); PLAT: a policy such as "
                   "manylinux_2_28_x86_64, default auto (write --repair=PLAT)")
    b.set_defaults(func=cmd_build)

    s = sub.add_parser(
        "stamp", formatter_class=fmt,
        help="stamp wheels built elsewhere with the ABI of an environment's torch",
        description="Stamp wheels built without abistamp (plain setuptools, downloaded) with "
        "the ABI of an environment's torch, by the backend's rules and code.",
        epilog="examples:\n"
        "  abistamp stamp dist/*.whl --python .venv\n"
        "  abistamp stamp other.whl --abi-from wheelhouse/pt213cpu/tiny_ext-*.whl -o out/\n")
    s.add_argument("wheels", nargs="+", metavar="WHEEL")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--python", metavar="PATH",
                     help="the environment whose torch the wheels were built against "
                     "(its python is run once to read torch's C++ ABI)")
    src.add_argument("--abi-from", metavar="WHEEL",
                     help="take the ABI from the record of a wheel abistamp stamped")
    s.add_argument("-o", "--out-dir", metavar="DIR", help="default: beside each wheel")
    s.add_argument("-C", "--config-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="abistamp settings (label, pin, build-number, local-version...)")
    s.add_argument("--project", metavar="DIR",
                   help="read [tool.abistamp] from this project's pyproject.toml")
    s.set_defaults(func=cmd_stamp)

    r = sub.add_parser(
        "repair", formatter_class=fmt,
        help="give wheels a manylinux tag, leaving torch's libraries to torch",
        description="Repair stamped wheels with auditwheel for publishing: the best manylinux "
        "policy they meet (or --plat), other libraries grafted, torch's own (libtorch, libc10, "
        "CUDA runtime and the nvidia-* libraries) left to the installed torch; the stamps and "
        "the ABI record kept. Needs `pip install 'abistamp[repair]'`.",
        epilog="examples:\n"
        "  abistamp repair wheelhouse/pt213cpu/*.whl -o dist/\n"
        "  abistamp repair dist/foo-*.whl -o dist/ --plat manylinux_2_28_x86_64 --python .venv\n")
    r.add_argument("wheels", nargs="+", metavar="WHEEL")
    r.add_argument("-o", "--out-dir", required=True, metavar="OUT",
                   help="where the repaired wheels go")
    r.add_argument("--plat", default="auto", metavar="PLAT",
                   help="the manylinux policy, e.g. manylinux_2_28_x86_64 (default: auto, the "
                   "best one the wheel meets)")
    r.add_argument("--python", metavar="PATH",
                   help="the torch environment the wheels were built against: sonames found "
                   "in its torch and nvidia library folders are left to torch (default: "
                   "$VIRTUAL_ENV or ./.venv when its torch matches; else by name)")
    r.set_defaults(func=cmd_repair)

    i = sub.add_parser("inspect", formatter_class=fmt, help="show the ABI record, stamps and torch pins of wheels",
                       description="Show the ABI record, stamps and torch pins of wheels.",
                       epilog="example:\n  abistamp inspect --json wheelhouse/*/*.whl\n")
    i.add_argument("wheels", nargs="+", metavar="WHEEL")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_inspect)

    c = sub.add_parser(
        "check", formatter_class=fmt, help="compare what is installed in an environment with its torch",
        description="For every installed distribution with an abistamp record (editable "
        "installs included) and for DeepSpeed's torch_info, compare with the installed torch; "
        "also CPU flags and, with a GPU, CUDA archs. Reads files only: no import of torch. "
        "Exit code 1 on any mismatch.",
        epilog="examples:\n  abistamp check                 # $VIRTUAL_ENV, ./.venv, or this "
        "python\n  abistamp check --python .venv --json\n")
    c.add_argument("--python", metavar="PATH", help="the environment's python or folder")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_check)

    u = sub.add_parser(
        "uv-config", formatter_class=fmt, help="print the uv configuration that routes extras to a wheelhouse's ABIs",
        description="Print the pyproject.toml tables that make a uv project install each extra's "
        "wheels from one ABI folder of WHEELHOUSE (with --source-build: build them from source "
        "per torch instead).",
        epilog="examples:\n  abistamp uv-config wheelhouse --extra cpu=pt213cpu --extra "
        "cu130=pt214cu130\n  abistamp uv-config wheelhouse --extra cpu=pt213cpu --format simple "
        "--base-url https://wheels.example.com/wh\n"
        "  abistamp uv-config wheelhouse --extra cpu=pt213cpu --torch-index "
        "cpu=https://download.pytorch.org/whl/cpu   # wheels built by hand\n"
        "  abistamp uv-config --check pyproject.toml   # exit 1 if uv would reuse a torch build\n")
    u.add_argument("wheelhouse", metavar="WHEELHOUSE", nargs="?")
    u.add_argument("--extra", action="append", default=[], metavar="NAME=ABI",
                   help="an extra of your project and the ABI folder it installs from")
    u.add_argument("--check", metavar="PYPROJECT", nargs="?", const="pyproject.toml",
                   help="instead: read a uv project and report dependencies built against "
                   "torch that nothing makes uv rebuild for another torch (exit 1 if any)")
    u.add_argument("--package", action="append", default=[], metavar="NAME",
                   help="only these packages (default: every package in those folders)")
    u.add_argument("--format", choices=("flat", "simple"),
                   help="index kind: flat (the folder's index.html) or simple (PEP 503); "
                   "default flat, and simple with --single-index")
    u.add_argument("--base-url", metavar="URL",
                   help="where the wheelhouse is served (default: its local file:// URL)")
    u.add_argument("--no-torch", action="store_true",
                   help="leave torch's index to your own configuration")
    u.add_argument("--torch-index", action="append", default=[], metavar="[EXTRA=]URL",
                   help="where the extra's torch comes from (every extra's without EXTRA=): a "
                   "PEP 503 index URL or a folder of torch wheels; needed where the wheelhouse "
                   "does not say (wheels built by hand), and wins over what it says")
    u.add_argument("--source-build", action="store_true",
                   help="configure source builds with match-runtime instead of the wheels")
    u.add_argument("--single-index", action="store_true",
                   help="one index holding every ABI (WHEELHOUSE/simple/, or all.html with "
                   "--format flat): each extra's torch pin selects its wheels by resolution")
    u.set_defaults(func=cmd_uv_config)

    x = sub.add_parser(
        "index", formatter_class=fmt,
        help="merge wheelhouses built on different machines into one indexed wheelhouse",
        description="Merge the ABI folders and manifests of WHEELHOUSE... into OUT (new, or "
        "existing: then they are added to it), refusing two different files under one name, "
        "and write OUT's pages: per ABI folder a flat page and a PEP 503 index, and over every "
        "ABI OUT/simple/ and OUT/all.html, with sha256 fragments and relative links. Only "
        "files whose content changes are rewritten.",
        epilog="examples:\n  abistamp index artifacts/wh-* -o public\n"
        "  abistamp index new-cell/wheelhouse -o public    # add one cell to an existing "
        "index\n  abistamp index wheelhouse -o wheelhouse   # pages for folders `uv build "
        "--out-dir wheelhouse/pt213cpu` filled\n  python -m http.server -d public   # pip install --index-url "
        "http://HOST:8000/simple/ ...\n")
    x.add_argument("wheelhouses", nargs="+", metavar="WHEELHOUSE",
                   help="folders written by `abistamp build -o` (OUT itself may be one), or "
                   "filled by hand: ABI folders of stamped wheels, or stamped wheels")
    x.add_argument("-o", "--out", required=True, metavar="OUT",
                   help="the merged wheelhouse (created if missing)")
    x.set_defaults(func=cmd_index)

    m = sub.add_parser(
        "matrix", formatter_class=fmt,
        help="print the cells of [tool.abistamp.matrix] as JSON for a CI matrix",
        description="Expand [tool.abistamp.matrix] of PROJECT's pyproject.toml (torch versions "
        "x accelerators x Python versions, less the excludes) into cells, each with the exact "
        "`abistamp build` arguments that build it on one runner. See docs/scale-out.md.",
        epilog="examples:\n"
        "  abistamp matrix --format table\n"
        "  abistamp matrix . --format github --github-output   # in a GitHub Actions step\n"
        "  abistamp matrix --format list --only accelerator=cpu --python-current\n")
    m.add_argument("project", metavar="PROJECT", nargs="?", default=".",
                   help="the project folder, as the build steps will see it (default: .)")
    m.add_argument("--format", choices=("github", "list", "table"), default="github",
                   help="github: {\"include\": [...]} for strategy.matrix; list: a JSON list; "
                   "table: for people (default: github)")
    m.add_argument("--github-output", action="store_true",
                   help="also append matrix=<json> to $GITHUB_OUTPUT")
    m.add_argument("--only", action="append", default=[], metavar="AXIS=VALUE",
                   help="keep the cells with this torch, accelerator or python (repeatable)")
    m.add_argument("--python-current", action="store_true",
                   help="keep the cells of the Python running abistamp (one machine's share)")
    m.set_defaults(func=cmd_matrix)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.func(args)
        return code
    except AbistampError as e:
        print(f"abistamp: error: {e.one_line()}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("abistamp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


# --- helpers ------------------------------------------------------------------------------------


def parse_pairs(values: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise AbistampError(f"`{option} {value}` is not of the form KEY=VALUE",
                                f"write it as `{option} NAME=VALUE`")
        out[key.strip()] = val
    return out


def parse_config(values: list[str]) -> dict[str, str | list[str]]:
    """`-C k=v` repeated: a list when a key repeats, as pip and build pass them."""
    out: dict[str, str | list[str]] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise AbistampError(f"`-C {value}` is not of the form KEY=VALUE",
                                "write it as `-C abistamp.label=pt{major}{minor}`")
        key = key.strip()
        if key in out:
            old = out[key]
            out[key] = [*old, val] if isinstance(old, list) else [old, val]
        else:
            out[key] = val
    return out


def say(text: str) -> None:
    print(f"abistamp: {text}", file=sys.stderr, flush=True)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# --- build --------------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    import threading

    from abistamp.core.labels import parse_torch_requirement
    from abistamp.core.settings import Settings

    from .build import Matrix, Plan, Variant, recorded_environ, resolve_source
    from .envs import resolve_python
    from .wheelhouse import Wheelhouse

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
                rebuild=args.rebuild, jobs=args.jobs, repair=args.repair)
    if work_root:
        plan.work_root = work_root
    width = max(len(v.name) for v in variants)
    lock = threading.Lock()

    def progress(variant: Variant | None, text: str) -> None:
        with lock:
            say(f"[{variant.name.ljust(width)}] {text}" if variant else text)

    started = time.monotonic()
    matrix = Matrix(plan, progress)
    outcomes = matrix.run()
    rows: list[tuple[str, ...]] = [("VARIANT", "STATUS", "ABI", "WHEEL", "TIME")]
    for o in outcomes:
        entry = o.entry or {}
        wheel = str(entry.get("wheel", "-"))
        rows.append((o.variant.name, o.status, str(entry.get("label", "-")),
                     wheel.split("/", 1)[-1] if o.status in ("built", "skipped") else
                     (o.note[:100] if o.note else "-"),
                     f"{o.seconds:.1f}s" if o.status != "skipped" else "-"))
    print(table(rows))
    failed = [o for o in outcomes if o.status in ("failed", "cancelled")]
    print(f"wheelhouse: {wheelhouse.root} ({len(outcomes) - len(failed)} of {len(outcomes)} "
          f"variants ready, {time.monotonic() - started:.1f} s)")
    for o in failed:
        if o.log:
            print(f"{o.variant.name}: {o.status}; log: {o.log}")
    if matrix.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_MISMATCH if failed else EXIT_OK


# --- stamp --------------------------------------------------------------------------------------


def cmd_stamp(args: argparse.Namespace) -> int:
    from .envs import detect_in, resolve_python
    from .stamp import abi_from_wheel, stamp_files

    wheels = [Path(w) for w in args.wheels]
    for w in wheels:
        if not w.is_file():
            raise AbistampError(f"`{w}` does not exist", "check the path")
    abi = abi_from_wheel(Path(args.abi_from)) if args.abi_from else \
        detect_in(resolve_python(args.python))
    out_dir = Path(args.out_dir) if args.out_dir else None
    project = Path(args.project) if args.project else None
    results = stamp_files(wheels, abi, out_dir, parse_config(args.config_setting), project)
    for src, dest in zip(wheels, results):
        print(f"{src.name} -> {dest}")
    return EXIT_OK


# --- repair -------------------------------------------------------------------------------------


def cmd_repair(args: argparse.Namespace) -> int:
    from .envs import default_python, resolve_python
    from .repair import repair_files

    explicit = args.python is not None
    python = resolve_python(args.python) if explicit else default_python()
    repair_files([Path(w) for w in args.wheels], Path(args.out_dir), args.plat, python,
                 explicit, print)
    return EXIT_OK


# --- inspect ------------------------------------------------------------------------------------


def describe_wheel(path: Path) -> dict[str, Any]:
    from abistamp.core.stamp import metadata_fields, read_wheel

    info = read_wheel(path)
    requires = metadata_fields(info.metadata, "Requires-Dist")
    torch_requires = [r for r in requires if r.split(";")[0].strip().lower().startswith("torch")
                      and r[5:6] in ("", " ", "=", "<", ">", "!", "~", "[", "(", ";")]
    data: dict[str, Any] = {
        "wheel": path.name, "path": str(path), "name": info.name, "version": info.version,
        "build_tag": info.build_tag, "tags": info.tags, "torch_requires": torch_requires,
        "record": info.abi_record,
    }
    if not info.abi_record or not info.abi_record.get("profile"):
        import zipfile

        from abistamp.core.profiles.deepspeed import INFO_MODULE, read_info

        with zipfile.ZipFile(path) as zf:
            if INFO_MODULE in zf.namelist():
                ds = read_info(zf.read(INFO_MODULE).decode("utf-8"))
                data["deepspeed"] = {"torch_info": ds.get("torch_info"),
                                     "installed_ops": sorted(k for k, v in
                                                             (ds.get("installed_ops") or {})
                                                             .items() if v)}
    return data


def render_wheel(d: dict[str, Any]) -> str:
    r = d["record"]
    lines = [d["wheel"]]

    def row(key: str, value: Any) -> None:
        lines.append(f"  {key:<14}{value}")

    row("version", d["version"])
    row("build tag", d["build_tag"] or "-")
    row("tags", d["tags"])
    row("torch pins", ", ".join(d["torch_requires"]) or "none")
    if not r:
        row("abistamp", "no record: this wheel is not stamped")
    else:
        cxx = {True: "yes", False: "no", None: "unknown"}[r.get("cxx11abi")]
        row("torch", f"{r.get('torch')} ({r.get('accelerator')}; C++11 ABI {cxx})")
        if r.get("cuda") or r.get("hip"):
            row("cuda/hip", f"cuda {r.get('cuda') or '-'}, hip {r.get('hip') or '-'}, "
                f"nvcc {r.get('nvcc') or '-'}, archs {r.get('cuda_arch_list') or 'default'}, "
                f"compiled CUDA: {r.get('compiled_cuda')}")
        lv = r.get("local_version") or {}
        row("label", f"{r.get('label')} (local version "
            f"{'added' if lv.get('applied') else 'not added'}: {lv.get('reason', '-')})")
        row("version from", r.get("original_version"))
        row("pin", r.get("pin") or "none")
        extras = []
        if r.get("editable"):
            extras.append("editable")
        if r.get("stamped_after_build"):
            extras.append("stamped after the build")
        if extras:
            row("notes", ", ".join(extras))
        profile = r.get("profile")
        if profile:
            ti = profile.get("torch_info") or {}
            ops = ", ".join(profile.get("installed_ops") or []) or "none"
            row("profile", f"{profile.get('name')}: ops {ops}; "
                f"torch_info {ti.get('version')} cuda {ti.get('cuda_version')}")
            cpu = profile.get("cpu")
            if cpu:
                row("cpu", f"{cpu.get('machine')} -march={cpu.get('march')} "
                    f"({' '.join(cpu.get('flags') or [])})")
        rep = r.get("repair")
        if rep:
            row("repaired", f"{rep.get('policy')} by {rep.get('tool')}; left to torch: "
                f"{', '.join(rep.get('left_to_torch') or []) or 'none'}; grafted: "
                f"{', '.join(rep.get('grafted') or []) or 'none'}")
        row("stamped by", f"abistamp {r.get('abistamp')} (record schema {r.get('schema')})")
    if d.get("deepspeed"):
        ti = d["deepspeed"]["torch_info"] or {}
        row("deepspeed", f"torch_info {ti.get('version')} cuda {ti.get('cuda_version')}; ops "
            f"{', '.join(d['deepspeed']['installed_ops']) or 'none'}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    described = [describe_wheel(Path(w)) for w in args.wheels]
    if args.json:
        print(json.dumps(described, indent=2, sort_keys=True))
    else:
        print("\n\n".join(render_wheel(d) for d in described))
    return EXIT_OK


# --- check --------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from .check import check_environment, render_table
    from .envs import default_python, resolve_python

    python = resolve_python(args.python) if args.python else default_python()
    report = check_environment(python)
    if args.json:
        print(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        sys.stdout.write(render_table(report))
    return EXIT_OK if report.ok else EXIT_MISMATCH


# --- uv-config ----------------------------------------------------------------------------------


def cmd_uv_config(args: argparse.Namespace) -> int:
    from .uvconfig import parse_extras, parse_torch_indexes, plan_routes, render
    from .wheelhouse import Wheelhouse

    if args.check is not None:
        return cmd_uv_check(Path(args.check))
    if args.wheelhouse is None or not args.extra:
        raise AbistampError("`abistamp uv-config` needs a WHEELHOUSE and at least one --extra",
                            "run `abistamp uv-config WHEELHOUSE --extra NAME=ABI`, or "
                            "`abistamp uv-config --check pyproject.toml`")

    wheelhouse = Wheelhouse(Path(args.wheelhouse))
    extras = parse_extras(args.extra)
    routes = plan_routes(wheelhouse, extras, args.package or None,
                         parse_torch_indexes(args.torch_index, extras))
    sys.stdout.write(render(wheelhouse, routes, fmt=args.format, base_url=args.base_url,
                            with_torch=not args.no_torch, source_build=args.source_build,
                            single_index=args.single_index))
    return EXIT_OK


def cmd_uv_check(pyproject: Path) -> int:
    from .uvcheck import check_project

    findings, notes = check_project(pyproject)
    for note in notes:
        print(note)
    for f in findings:
        print(f"{f.package}: {f.why}, and nothing makes uv build it again for another torch\n"
              f"  fix: {f.fix}")
    if findings:
        print(f"{len(findings)} dependenc{'y' if len(findings) == 1 else 'ies'} would reuse a "
              f"build made for another torch ({pyproject})")
        return EXIT_MISMATCH
    print(f"ok: no dependency built against torch is left to uv's source cache ({pyproject})")
    return EXIT_OK


# --- index --------------------------------------------------------------------------------------


def cmd_index(args: argparse.Namespace) -> int:
    from .index import merge, render

    sys.stdout.write(render(merge([Path(w) for w in args.wheelhouses], Path(args.out))))
    return EXIT_OK


# --- matrix -------------------------------------------------------------------------------------


def cmd_matrix(args: argparse.Namespace) -> int:
    from abistamp.core.settings import MatrixSettings

    from .matrix import current_python, expand, render, select, write_github_output

    if args.github_output and args.format == "table":
        raise AbistampError("`--github-output` writes JSON", "use `--format github` with it")
    cells = expand(MatrixSettings.load(Path(args.project)), args.project)
    only = list(args.only) + ([f"python={current_python()}"] if args.python_current else [])
    text = render(select(cells, only) if only else cells, args.format)
    if args.github_output:
        write_github_output(text, os.environ)
    sys.stdout.write(text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
