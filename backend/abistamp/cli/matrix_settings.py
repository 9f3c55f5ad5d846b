"""`[tool.abistamp.matrix]`: the cells `abistamp matrix` hands to a CI system.

Read by the command line only (never by a build), from pyproject.toml only: a matrix is a
property of the project, not of one build, so it has no environment variable or config setting.
Declared like the build's settings (core/settings_model.py): a dataclass per table, whose fields
give the keys, the conversions, the messages and docs/configuration.md's tables
(``python -m abistamp.cli.matrix_settings``).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from abistamp.core.errors import AbistampError
from abistamp.core.settings import read_pyproject
from abistamp.core.settings_model import (
    Field,
    Location,
    TomlSource,
    about,
    did_you_mean,
    fields_of,
    read_sources,
)

MATRIX_TABLE = "tool.abistamp.matrix"
DEFAULT_RUNS_ON = "ubuntu-latest"

#: Keys of one `exclude` entry, and the cell attribute each compares with.
CELL_AXES = ("torch", "accelerator", "python")


# --- the types of the matrix's values, each with its converter -----------------------------

def _text(raw: Any, where: Location) -> str:
    if not isinstance(raw, str):  # a TOML number here is a mistake, not a name
        raise AbistampError(f"{where} must be a string, found {raw!r}",
                            f'quote it: {where.key} = "{raw}"')
    return raw.strip()


def _folder(raw: Any, where: Location) -> str:
    value = _text(raw, where)
    if not value:
        raise AbistampError(f"{where} is empty", 'name a folder, such as "wheelhouse"')
    return value


def _string_list(raw: Any, where: Location, what: str, allow_one: bool = False
                 ) -> tuple[str, ...]:
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


def _strings(raw: Any, where: Location) -> tuple[str, ...]:
    return _string_list(raw, where, "strings", allow_one=True)


def _pythons(raw: Any, where: Location) -> tuple[str, ...]:
    values = _string_list(raw, where, "Python versions as strings")
    for v in values:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", v):
            raise AbistampError(f"{where} has `{v}`, not a Python version",
                                'write versions such as "3.12"')
    if not values:
        raise AbistampError(f"{where} is empty", 'name at least one, such as ["3.12"]')
    return values


def _torch_versions(raw: Any, where: Location) -> tuple[str, ...]:
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


def _environment(raw: Any, where: Location) -> Mapping[str, str]:
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


def _config_settings(raw: Any, where: Location) -> tuple[tuple[str, str], ...]:
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


def _cells(raw: Any, where: Location) -> tuple[Mapping[str, str], ...]:
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


def _accelerators(raw: Any, where: Location) -> tuple[Accelerator, ...]:
    if not isinstance(raw, dict) or not raw:
        raise AbistampError(f"{where} must be a table of accelerators, found {raw!r}",
                            f"write it as {MATRIX_FIELDS_BY_KEY['accelerators'].example}")
    out = []
    for name, value in raw.items():
        dotted = f"{where.dotted}.{name}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise AbistampError(f"`{dotted}` in `{where.file}`: an accelerator name must be "
                                "letters, digits, `.`, `_` and `-` (it names CI jobs and "
                                "artifacts)", "rename it, such as `cu130`")
        if isinstance(value, str):
            value = {"torch-index": value}
        if not isinstance(value, dict):
            raise AbistampError(f"`{dotted}` in `{where.file}` must be an index URL or a table, "
                                f"found {value!r}", f'write {name} = "https://..." or {name} = '
                                '{ find-links = ["..."] }')
        values, _ = read_sources(ACCELERATOR_FIELDS, [TomlSource(value, dotted, where.file)])
        out.append(Accelerator(name, **values))
    return tuple(out)


Text = Annotated[str, _text]
Folder = Annotated[str, _folder]
Strings = Annotated[tuple[str, ...], _strings]  # a single string is a list of one
Pythons = Annotated[tuple[str, ...], _pythons]
TorchVersions = Annotated[tuple[str, ...], _torch_versions]
Environment = Annotated[Mapping[str, str], _environment]
ConfigPairs = Annotated[tuple[tuple[str, str], ...], _config_settings]
Cells = Annotated[tuple[Mapping[str, str], ...], _cells]
Accelerators = Annotated[tuple["Accelerator", ...], _accelerators]


# --- the tables -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Accelerator:
    """One table of `accelerators`, validated; `name` is its key there."""

    name: str
    torch_index: Text = dataclasses.field(
        default="",
        metadata=about(
            "The index torch comes from (`--extra-index-url`). What the URL shorthand sets.",
        ),
    )
    index_url: Text = dataclasses.field(
        default="",
        metadata=about(
            "`--index-url` for this accelerator's builds (replaces the default index).",
        ),
    )
    find_links: Strings = dataclasses.field(
        default=(),
        metadata=about(
            "`--find-links` for this accelerator's builds: folders (relative to the project) or "
            "URLs holding torch wheels.",
        ),
    )
    runs_on: Text = dataclasses.field(
        default="",
        metadata=about(
            "The runner label of this accelerator's cells (a runner with the CUDA toolkit, say).",
        ),
    )
    env: Environment = dataclasses.field(
        default_factory=dict,
        metadata=about(
            "Environment variables for this accelerator's builds, over the shared `env` "
            "(`TORCH_CUDA_ARCH_LIST`, say).",
            example='{ TORCH_CUDA_ARCH_LIST = "8.0;9.0" }',
        ),
    )


@dataclasses.dataclass(frozen=True)
class MatrixSettings:
    """`[tool.abistamp.matrix]`, validated."""

    torch: TorchVersions = dataclasses.field(
        metadata=about(
            "The torch versions to build for: versions or wildcards, each becoming `--torch "
            "torch==VERSION`.",
            example='["2.13.0", "2.14.1"]',
        ),
    )
    accelerators: Accelerators = dataclasses.field(
        metadata=about(
            "Each accelerator and where its torch comes from: a URL (the torch index, passed as "
            "`--extra-index-url`, which uv searches before the default index, so torch comes from "
            "it and what it lacks from the default index), or a table with the keys below.",
            example='{ cpu = "https://download.pytorch.org/whl/cpu", '
                'cu130 = "https://download.pytorch.org/whl/cu130" }',
        ),
    )
    python: Pythons = dataclasses.field(
        metadata=about(
            "The Python versions to build for, as strings (`\"3.10\"`: a TOML number 3.10 would be "
            "3.1). A cell's python is the interpreter the CI job installs and runs abistamp with.",
            example='["3.11", "3.12"]',
        ),
    )
    exclude: Cells = dataclasses.field(
        default=(),
        metadata=about(
            "Cells to leave out, as in GitHub's `exclude`: each a table of some of `torch`, "
            "`accelerator`, `python`; a cell that matches every key given is removed. Each value "
            "must be one the table declares.",
            example='[{ torch = "2.13.0", accelerator = "cu130" }]',
        ),
    )
    runs_on: Text = dataclasses.field(
        default=DEFAULT_RUNS_ON,
        metadata=about(
            "The runner label of every cell (GitHub's `runs-on`), unless its accelerator names "
            "one.",
        ),
    )
    wheelhouse: Folder = dataclasses.field(
        default="wheelhouse",
        metadata=about(
            "The wheelhouse folder of every cell's `abistamp build -o`, relative to the project.",
        ),
    )
    env: Environment = dataclasses.field(
        default_factory=dict,
        metadata=about(
            "Environment variables for every build (`abistamp build --env NAME=VALUE`).",
            example='{ DS_BUILD_CPU_ADAM = "1" }',
        ),
    )
    config_settings: ConfigPairs = dataclasses.field(
        default=(),
        metadata=about(
            "PEP 517 config settings for every build (`abistamp build -C KEY=VALUE`); a list "
            "value repeats the key.",
            example='{ "abistamp.portable-cpu" = "true" }',
        ),
    )
    index_url: Text = dataclasses.field(
        default="",
        metadata=about(
            "`--index-url` for every build: replaces the default index for torch and the build "
            "requirements alike.",
        ),
    )
    extra_index_url: Strings = dataclasses.field(
        default=(),
        metadata=about(
            "`--extra-index-url` for every build.",
        ),
    )
    find_links: Strings = dataclasses.field(
        default=(),
        metadata=about(
            "`--find-links` for every build: folders (relative to the project) or URLs.",
        ),
    )

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
        values, _ = read_sources(MATRIX_FIELDS, [TomlSource(table, MATRIX_TABLE, file)])
        missing = [f for f in MATRIX_FIELDS if f.required and f.attr not in values]
        if missing:
            raise AbistampError(
                f"`{MATRIX_TABLE}` in `{file}` has no " + ", ".join(f"`{f.key}`" for f in missing),
                "declare " + ", ".join(f"`{f.key} = {f.example}`" for f in missing))
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


MATRIX_FIELDS = fields_of(MatrixSettings)
MATRIX_FIELDS_BY_KEY = {f.key: f for f in MATRIX_FIELDS}
ACCELERATOR_FIELDS = fields_of(Accelerator)


def matrix_reference_markdown() -> str:
    """docs/configuration.md's tables of `[tool.abistamp.matrix]`, generated from the model."""

    def rows(fields: tuple[Field, ...]) -> list[str]:
        out = []
        for f in fields:
            if f.required:
                default = "required"
            elif f.default in ((), {}, ""):
                default = "none"
            else:
                default = f"`{f.default}`"
            example = f" Example: `{f.key} = {f.example}`." if f.example else ""
            out.append(f"| `{f.key}` | {default} | {f.doc}{example} |")
        return out

    lines = [f"| key (`[{MATRIX_TABLE}]`) | default | meaning |", "|---|---|---|",
             *rows(MATRIX_FIELDS), "",
             "| key of an accelerator table (`accelerators.NAME = { ... }`) | default | meaning |",
             "|---|---|---|", *rows(ACCELERATOR_FIELDS)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(matrix_reference_markdown())
