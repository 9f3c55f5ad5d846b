"""The PEP 517 / PEP 660 build backend: `build-backend = "abistamp.backend"`.

Each hook delegates to the wrapped backend (setuptools' legacy backend unless
`[tool.abistamp] backend` or `ABISTAMP_BACKEND` names another) through :class:`Build`, which
detects the torch ABI and stamps the result. Optional hooks exist only when the wrapped backend
has them; the choice is made from the environment and pyproject.toml, because frontends ask
which hooks exist before they pass config settings. No state is kept between hooks: each may
run in a fresh process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .core.build import Build, backend_spec, load_backend
from .core.settings import read_tool_table
from .core.settings_model import ConfigSettings


def build_wheel(wheel_directory: str, config_settings: ConfigSettings | None = None,
                metadata_directory: str | None = None) -> str:
    return Build(config_settings).build("build_wheel", wheel_directory, metadata_directory)


def build_sdist(sdist_directory: str, config_settings: ConfigSettings | None = None) -> str:
    return Build(config_settings).sdist(sdist_directory)


def get_requires_for_build_wheel(config_settings: ConfigSettings | None = None) -> list[str]:
    return Build(config_settings).requires("get_requires_for_build_wheel")


def get_requires_for_build_sdist(config_settings: ConfigSettings | None = None) -> list[str]:
    return Build(config_settings).requires("get_requires_for_build_sdist")


def _prepare_metadata_for_build_wheel(metadata_directory: str,
                                      config_settings: ConfigSettings | None = None) -> str:
    return Build(config_settings).prepare_metadata("prepare_metadata_for_build_wheel",
                                                   metadata_directory)


def _get_requires_for_build_editable(config_settings: ConfigSettings | None = None
                                     ) -> list[str]:
    return Build(config_settings).requires("get_requires_for_build_editable")


def _prepare_metadata_for_build_editable(metadata_directory: str,
                                         config_settings: ConfigSettings | None = None) -> str:
    return Build(config_settings).prepare_metadata("prepare_metadata_for_build_editable",
                                                   metadata_directory)


def _build_editable(wheel_directory: str, config_settings: ConfigSettings | None = None,
                    metadata_directory: str | None = None) -> str:
    return Build(config_settings).build("build_editable", wheel_directory, metadata_directory)


# Optional hooks, each offered only when the wrapped backend offers it (PEP 517: a frontend
# falls back when a hook is missing, and must not be told a hook exists that cannot work).
_OPTIONAL = {
    "prepare_metadata_for_build_wheel": _prepare_metadata_for_build_wheel,
    "get_requires_for_build_editable": _get_requires_for_build_editable,
    "prepare_metadata_for_build_editable": _prepare_metadata_for_build_editable,
    "build_editable": _build_editable,
}


def __getattr__(name: str) -> Any:
    if name in _OPTIONAL:
        spec, where = backend_spec(read_tool_table(Path.cwd())[0], os.environ)
        if hasattr(load_backend(spec, where), name):
            return _OPTIONAL[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_OPTIONAL])
