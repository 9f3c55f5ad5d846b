"""The ABI record, `<name>-<version>.dist-info/abistamp.json` (docs/abi-record.md).

One model for every place that writes or reads it: the backend, `abistamp stamp`, the
wheelhouse, `repair`, `check` and `inspect`. The record stays a JSON object (a dict): it is a
public format whose readers ignore keys they don't know, and a profile or a repair adds its own
object under one key. What this module owns is which fields there are, who fills them, their
types, the JSON bytes, and the way back from a record to a torch ABI or to a stamp.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .. import RECORD_SCHEMA, __version__
from .abi import TorchABI
from .errors import AbistampError

RECORD_NAME = "abistamp.json"

#: A record: a JSON object, keys as in docs/abi-record.md.
Record = dict[str, Any]

_STR, _INT, _BOOL, _LIST, _OBJECT, _NULL = str, int, bool, list, dict, type(None)

#: The documented type of each field (docs/abi-record.md); a reader checks what it finds.
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "schema": (_INT,), "abistamp": (_STR,), "name": (_STR,), "version": (_STR,),
    "original_version": (_STR,), "torch": (_STR,), "torch_major_minor": (_STR,),
    "accelerator": (_STR,), "cuda": (_STR, _NULL), "hip": (_STR, _NULL),
    "cxx11abi": (_BOOL, _NULL), "cuda_arch_list": (_STR, _NULL), "nvcc": (_STR, _NULL),
    "compiled_cuda": (_BOOL, _NULL), "label": (_STR,), "build_tag": (_STR, _NULL),
    "python_tag": (_STR,), "abi_tag": (_STR,), "platform_tag": (_STR,),
    "local_version": (_OBJECT,), "pin": (_STR, _NULL), "requires": (_LIST,),
    "ninja": (_BOOL, _NULL), "compiler_cache": (_BOOL,), "editable": (_BOOL,),
    "stamped_after_build": (_BOOL,), "profile": (_OBJECT, _NULL), "repair": (_OBJECT,),
}


@dataclasses.dataclass(frozen=True)
class Stamp:
    """What to change in a wheel."""

    version: str | None  # the new version, or None for the version before any stamp
    build_tag: str | None  # the build tag the stamped wheel has, or None for none
    requires: tuple[str, ...]  # Requires-Dist lines to add (the torch pin)
    record: Record  # the ABI record; wheel tags and names are filled in by the stamping


# --- writing ------------------------------------------------------------------------------------


def abi_fields(abi: TorchABI) -> Record:
    """The fields that describe the torch a build compiled against."""
    return {
        "torch": abi.torch_version,
        "torch_major_minor": f"{abi.major}.{abi.minor}",
        "accelerator": abi.accelerator,
        "cuda": abi.cuda,
        "hip": abi.hip,
        "cxx11abi": abi.cxx11abi,
        "cuda_arch_list": abi.cuda_arch_list,
        "nvcc": abi.nvcc,
    }


def build_fields(abi: TorchABI, *, label: str, apply_label: bool, reason: str,
                 pin: str | None, facts: Record) -> Record:
    """The fields a build (or `abistamp stamp`) decides; `facts` holds what only a build knows
    (ninja, compiler cache, CUDA sources, editable, the profile's object) and wins."""
    return {
        **abi_fields(abi),
        "label": label,
        "local_version": {"applied": apply_label, "reason": reason},
        "pin": pin,
        "ninja": None,
        "compiler_cache": False,
        "compiled_cuda": None,
        "editable": False,
        **facts,
    }


def wheel_fields(*, name: str, version: str, original_version: str, build_tag: str | None,
                 tags: str, requires: tuple[str, ...]) -> Record:
    """The fields the stamped wheel itself gives: its names, tags and added requirements."""
    python_tag, abi_tag, platform_tag = tags.split("-")
    return {
        "schema": RECORD_SCHEMA,
        "abistamp": __version__,
        "name": name,
        "version": version,
        "original_version": original_version,
        "build_tag": build_tag,
        "python_tag": python_tag,
        "abi_tag": abi_tag,
        "platform_tag": platform_tag,
        "requires": list(requires),
    }


def to_json(record: Record, where: str = "the ABI record") -> bytes:
    validate(record, where)
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


# --- reading ------------------------------------------------------------------------------------


def from_json(data: bytes | str, where: str) -> Record:
    """Parse and check a record; `where` names it in messages (`x.whl`'s `abistamp.json`)."""
    try:
        record = json.loads(data)
    except ValueError as e:
        raise AbistampError(f"{where} is not JSON: {e}",
                            "stamp the wheel again (`abistamp stamp`) or rebuild it") from None
    return validate(record, where)


def validate(record: Any, where: str) -> Record:
    """The record itself, once it is a JSON object whose known keys have the documented types;
    unknown keys are left alone (a newer abistamp may add some)."""
    if not isinstance(record, dict):
        raise AbistampError(f"{where} holds a JSON {type(record).__name__}, not an object",
                            "stamp the wheel again (`abistamp stamp`) or rebuild it")
    for key, types in FIELD_TYPES.items():
        if key not in record:
            continue
        value = record[key]
        # bool is an int to Python, not to JSON: `schema` must not be `true`.
        if not isinstance(value, types) or (isinstance(value, bool) and _BOOL not in types):
            names = " or ".join("null" if t is _NULL else _JSON_NAMES[t] for t in types)
            raise AbistampError(f"{where}: `{key}` is {json.dumps(value)}, not {names}",
                                "stamp the wheel again (`abistamp stamp`) or rebuild it")
    return record


_JSON_NAMES = {_STR: "a string", _INT: "an integer", _BOOL: "a boolean", _LIST: "a list",
               _OBJECT: "an object"}


def to_abi(record: Record) -> TorchABI:
    """The torch ABI a record describes. Raises KeyError without `torch`."""
    return TorchABI(
        torch_version=record["torch"],
        cuda=record.get("cuda"),
        hip=record.get("hip"),
        cxx11abi=record.get("cxx11abi"),
        cuda_arch_list=record.get("cuda_arch_list"),
        nvcc=record.get("nvcc"),
    )


def restamp(record: Record, *, version: str | None = None, build_tag: str | None,
            **changes: Any) -> Stamp:
    """The stamp that writes `record` again (with `changes`) onto a wheel it was read from or
    that was made from it: a new build number (wheelhouse), a new platform tag (repair)."""
    return Stamp(version=version or str(record["version"]), build_tag=build_tag,
                 requires=tuple(record.get("requires") or ()), record={**record, **changes})
