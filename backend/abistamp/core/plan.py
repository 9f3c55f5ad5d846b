"""What to stamp into one wheel: one function for the backend and for `abistamp stamp`.

The callers decide the two things that depend on how the wheel came about (whether the local
label may go into the version, and whether a pin may be added); everything else (label, build
tag, record fields) is decided here, so the two paths can't drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .abi import TorchABI
from .labels import build_tag, render_label, stamped_version
from .settings import Settings
from .stamp import Stamp, read_wheel


def label_for(settings: Settings, abi: TorchABI) -> str:
    return render_label(settings.label, abi, settings.origin("label"))


def make_stamp(settings: Settings, abi: TorchABI, wheel: Path, *, apply_label: bool,
               reason: str, pin: str | None, build_facts: dict[str, Any]) -> Stamp:
    """The stamp for `wheel`; build_facts holds what only a build knows (ninja, CUDA, ...)."""
    label = label_for(settings, abi)
    info = read_wheel(wheel)
    base = (info.abi_record or {}).get("original_version", info.version)
    record: dict[str, Any] = {
        **abi.as_record(),
        "label": label,
        "local_version": {"applied": apply_label, "reason": reason},
        "pin": pin,
        "ninja": None,
        "compiler_cache": False,
        "compiled_cuda": None,
        "cuda_arch_source": None,
        "cuda_toolkit": None,
        "cuda_headers": None,
        "editable": False,
        **build_facts,
    }
    if settings.build_tag:
        tag: str | None = build_tag(settings.build_number, label, settings.origin("label"))
    else:
        # Off means abistamp adds none; a tag the wrapped backend gave the wheel is its own.
        ours = (info.abi_record or {}).get("build_tag")
        tag = info.build_tag if info.build_tag != ours else None
    return Stamp(
        version=stamped_version(base, label) if apply_label else None,
        build_tag=tag,
        requires=(pin,) if pin else (),
        record=record,
    )
