"""`abistamp matrix`: the cells of `[tool.abistamp.matrix]`, as JSON for a CI system's matrix.

abistamp schedules nothing across machines: CI systems already run one job per matrix cell on
its own runner. This module expands the declaration (torch x accelerators x python, less the
excludes) into cells, each with the exact `abistamp build` arguments that builds it, and renders
them as GitHub Actions' `strategy.matrix` include form or as a plain list for any other system.
(`matrix.py` is the `abistamp build` engine; this is the CI side.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import posixpath
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from abistamp.core.errors import AbistampError
from abistamp.core.settings import Settings

from .common import EXIT_OK
from .matrix_settings import MATRIX_TABLE, Accelerator, MatrixSettings

FORMATS = ("github", "list", "table")

#: GitHub Actions runs at most this many jobs from one matrix; a bigger one fails the workflow
#: only once it has started, so say it here.
GITHUB_MAX_JOBS = 256


@dataclasses.dataclass(frozen=True)
class Cell:
    torch: str
    accelerator: str
    python: str
    runs_on: str
    wheelhouse: str
    args: tuple[str, ...]
    # Where torch comes from, also outside `args`: for tools other than `abistamp build`
    # (cibuildwheel's CIBW_ENVIRONMENT, a pip command).
    index_url: str = ""
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        # Stable and readable; also safe as a GitHub job and artifact name (no `*`, `/`, `:`).
        torch = re.sub(r"[^A-Za-z0-9._-]", "x", self.torch)
        return f"torch{torch}-{self.accelerator}-py{self.python}"

    @property
    def python_tag(self) -> str:
        """`cp311` for "3.11" (what cibuildwheel's CIBW_BUILD selects by); "" otherwise."""
        m = re.fullmatch(r"(\d+)\.(\d+)", self.python)
        return f"cp{m[1]}{m[2]}" if m else ""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "torch": self.torch,
            "torch_requirement": f"torch=={self.torch}",
            "accelerator": self.accelerator,
            "python": self.python,
            "python_tag": self.python_tag,
            "runs_on": self.runs_on,
            "wheelhouse": self.wheelhouse,
            "artifact": f"wheelhouse-{self.name}",
            "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls),
            "find_links": list(self.find_links),
            "args": list(self.args),
            "args_shell": shlex.join(self.args),
        }


def _join(project: str, path: str) -> str:
    """A path declared in the project's pyproject.toml, as seen from where the CI step runs."""
    if "://" in path or posixpath.isabs(path):
        return path
    return posixpath.normpath(posixpath.join(project, path))


def sources(matrix: MatrixSettings, accelerator: Accelerator, project: str
            ) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(index URL, extra index URLs, find-links) of an accelerator's cells."""
    extra = ((accelerator.torch_index,) if accelerator.torch_index else ()) + \
        matrix.extra_index_url
    links = tuple(_join(project, p) for p in (*accelerator.find_links, *matrix.find_links))
    return accelerator.index_url or matrix.index_url, extra, links


def build_args(matrix: MatrixSettings, accelerator: Accelerator, torch: str,
               project: str) -> tuple[str, ...]:
    """The `abistamp build` arguments of one cell (without the program name)."""
    args = ["build", posixpath.normpath(project), "--torch", f"torch=={torch}"]
    index_url, extra_index_urls, find_links = sources(matrix, accelerator, project)
    if index_url:
        args += ["--index-url", index_url]
    for url in extra_index_urls:
        args += ["--extra-index-url", url]
    for link in find_links:
        args += ["--find-links", link]
    for name, value in {**matrix.env, **accelerator.env}.items():
        args += ["--env", f"{name}={value}"]
    for key, value in matrix.config_settings:
        args += ["-C", f"{key}={value}"]
    args += ["-o", _join(project, matrix.wheelhouse)]
    return tuple(args)


def _check_build_settings(matrix: MatrixSettings) -> None:
    """Unknown `abistamp.*` settings fail here, once, not on every runner of the matrix."""
    config: dict[str, str | list[str]] = {}
    for key, value in matrix.config_settings:
        old = config.get(key)
        config[key] = value if old is None else [*([old] if isinstance(old, str) else old), value]
    envs = [dict(matrix.env)] + [{**matrix.env, **a.env} for a in matrix.accelerators]
    for environ in envs:
        try:
            Settings.load(None, config, environ)
        except AbistampError as e:
            raise AbistampError(f"in `{MATRIX_TABLE}`: {e.problem}", e.fix) from None


def expand(matrix: MatrixSettings, project: str = ".") -> list[Cell]:
    """Every cell: torch (outermost), then accelerator, then python, in declared order."""
    _check_build_settings(matrix)
    cells = []
    for torch in matrix.torch:
        for accelerator in matrix.accelerators:
            for python in matrix.python:
                values = {"torch": torch, "accelerator": accelerator.name, "python": python}
                if any(all(values[k] == v for k, v in ex.items()) for ex in matrix.exclude):
                    continue
                index_url, extra_index_urls, find_links = sources(matrix, accelerator, project)
                cells.append(Cell(
                    torch=torch, accelerator=accelerator.name, python=python,
                    runs_on=accelerator.runs_on or matrix.runs_on,
                    wheelhouse=_join(project, matrix.wheelhouse),
                    args=build_args(matrix, accelerator, torch, project),
                    index_url=index_url, extra_index_urls=extra_index_urls,
                    find_links=find_links))
    if not cells:
        raise AbistampError(f"`{MATRIX_TABLE}.exclude` removes every cell",
                            "exclude fewer combinations")
    return cells


def select(cells: list[Cell], only: Sequence[str]) -> list[Cell]:
    """Keep the cells matching every `--only AXIS=VALUE`."""
    wanted: dict[str, set[str]] = {}
    for item in only:
        axis, sep, value = item.partition("=")
        if not sep or axis not in ("torch", "accelerator", "python"):
            raise AbistampError(f"`--only {item}` is not of the form AXIS=VALUE",
                                "write it as `--only python=3.12` (axes: torch, accelerator, "
                                "python)")
        wanted.setdefault(axis, set()).add(value)
    kept = [c for c in cells
            if all(getattr(c, axis) in values for axis, values in wanted.items())]
    if not kept:
        raise AbistampError(
            "no cell matches " + ", ".join(f"`--only {o}`" for o in only),
            "use values the matrix has: " + "; ".join(
                f"{axis} " + ", ".join(sorted({getattr(c, axis) for c in cells}))
                for axis in ("torch", "accelerator", "python")))
    return kept


def render(cells: list[Cell], fmt: str) -> str:
    """The output of `abistamp matrix`; JSON on one line (a `name=value` output needs that)."""
    data = [c.as_json() for c in cells]
    if fmt == "github":
        if len(cells) > GITHUB_MAX_JOBS:
            raise AbistampError(
                f"the matrix has {len(cells)} cells; GitHub Actions runs at most "
                f"{GITHUB_MAX_JOBS} jobs from one matrix",
                "split it: `--only` selects part of it, for one workflow job each")
        return json.dumps({"include": data}, separators=(",", ":")) + "\n"
    if fmt == "list":
        return json.dumps(data, separators=(",", ":")) + "\n"
    if fmt == "table":
        rows = [("NAME", "RUNS-ON", "COMMAND")]
        rows += [(c.name, c.runs_on, "abistamp " + shlex.join(c.args)) for c in cells]
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        return "".join(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}\n"
                       for r in rows) + f"{len(cells)} cells\n"
    raise AssertionError(fmt)


def write_github_output(text: str, environ: Mapping[str, str]) -> Path:
    """Append `matrix=<json>` to the step's $GITHUB_OUTPUT file, GitHub's protocol for outputs."""
    target = environ.get("GITHUB_OUTPUT")
    if not target:
        raise AbistampError("`--github-output` needs `GITHUB_OUTPUT`, which GitHub Actions sets "
                            "in every step", "run it in a workflow step, or drop the option")
    path = Path(target)
    with path.open("a", encoding="utf-8") as f:  # appended: other outputs of the step stay
        f.write(f"matrix={text.strip()}\n")
    return path


def current_python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


# --- the command ----------------------------------------------------------------------------------

DESCRIPTION = ("Expand [tool.abistamp.matrix] of PROJECT's pyproject.toml (torch versions "
    "x accelerators x Python versions, less the excludes) into cells, each with the exact "
    "`abistamp build` arguments that build it on one runner. See docs/scale-out.md.")
EPILOG = ("examples:\n"
    "  abistamp matrix --format table\n"
    "  abistamp matrix . --format github --github-output   # in a GitHub Actions step\n"
    "  abistamp matrix --format list --only accelerator=cpu --python-current\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", metavar="PROJECT", nargs="?", default=".",
                   help="the project folder, as the build steps will see it (default: .)")
    p.add_argument("--format", choices=("github", "list", "table"), default="github",
                   help="github: {\"include\": [...]} for strategy.matrix; list: a JSON list; "
                   "table: for people (default: github)")
    p.add_argument("--github-output", action="store_true",
                   help="also append matrix=<json> to $GITHUB_OUTPUT")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=VALUE",
                   help="keep the cells with this torch, accelerator or python (repeatable)")
    p.add_argument("--python-current", action="store_true",
                   help="keep the cells of the Python running abistamp (one machine's share)")


def run(args: argparse.Namespace) -> int:
    if args.github_output and args.format == "table":
        raise AbistampError("`--github-output` writes JSON", "use `--format github` with it")
    cells = expand(MatrixSettings.load(Path(args.project)), args.project)
    only = list(args.only) + ([f"python={current_python()}"] if args.python_current else [])
    text = render(select(cells, only) if only else cells, args.format)
    if args.github_output:
        write_github_output(text, os.environ)
    sys.stdout.write(text)
    return EXIT_OK
