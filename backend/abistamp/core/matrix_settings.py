"""`[tool.abistamp.matrix]`: the cells `abistamp matrix` hands to a CI system.

Read by the command line only (never by a build, which imports core/settings.py alone), from
pyproject.toml only: a matrix is a property of the project, not of one build, so it has no
environment variable or config setting. The same `Field` records as the build's settings give
the keys, the validation messages and docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import AbistampError
from .settings import Field, did_you_mean, read_pyproject

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
                    raise AbistampError(
                        f"`{MATRIX_TABLE}.exclude` entry {number} in `{file}` has {axis} "
                        f"`{value}`, which `{MATRIX_TABLE}.{known}` does not declare: it would "
                        "exclude nothing",
                        did_you_mean(value, declared[axis], "use one of " + ", ".join(
                            f"`{v}`" for v in declared[axis])))


def _known_in(key: str, fields: Mapping[str, Field], dotted: str, file: str) -> Field:
    if key in fields:
        return fields[key]
    raise AbistampError(f"unknown key `{dotted}` in `{file}`",
                        did_you_mean(key, fields, f"known keys: {', '.join(fields)}"))


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
                raise AbistampError(f"{where}: entry {number} has unknown key `{key}`",
                                    did_you_mean(key, CELL_AXES, f"use {', '.join(CELL_AXES)}"))
            if not isinstance(value, str):
                raise AbistampError(f"{where}: entry {number} has {key} = {value!r}, not a "
                                    "string", f'quote it: {key} = "{value}"')
        out.append(dict(entry))
    return tuple(out)


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
