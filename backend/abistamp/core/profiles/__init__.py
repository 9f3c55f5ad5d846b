"""Project-specific support behind one small interface.

A profile says whether a source tree is its project, which environment variables the build
needs, and what to check and record once the wheel is built. DeepSpeed is the first; others
(torch-scatter, flash-attn, apex) can follow without touching the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..abi import TorchABI
    from ..settings import Settings


class Profile(Protocol):
    name: str

    def matches(self, project: Path) -> bool:
        """Whether this source tree is the profile's project."""

    def environ(self, project: Path, settings: Settings, abi: TorchABI,
                current: dict[str, str], facts: dict[str, Any]) -> dict[str, str]:
        """Environment variables to set for the build (never overriding the user's)."""

    def prepare(self, project: Path, settings: Settings, facts: dict[str, Any]
                ) -> Callable[[], None]:
        """Work inside the build process just before the wrapped backend runs; returns undo."""

    def verify(self, wheel: Path, abi: TorchABI, facts: dict[str, Any]) -> dict[str, Any]:
        """Check the built wheel against the ABI; return what goes into the ABI record."""

    def held_back_for_sdist(self, environ: dict[str, str]) -> list[str]:
        """Environment variables to unset while the sdist hooks run: build switches that make
        the project's build script demand a compiler setup an sdist never uses."""


def all_profiles() -> list[Profile]:
    from .deepspeed import DeepSpeed

    return [DeepSpeed()]


def select_profile(setting: str, project: Path) -> Profile | None:
    if setting == "none":
        return None
    profiles = all_profiles()
    if setting != "auto":
        return next(p for p in profiles if p.name == setting)
    return next((p for p in profiles if p.matches(project)), None)
